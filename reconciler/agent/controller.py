"""The pull loop: fetch the manifest, read the router, plan, apply, report; then decide when to run again.

`Agent.reconcile()` is one pass and returns how long to wait before the next. `Agent.run()` is the
loop around it: it also checks the router cheaply between passes (WAN address, uptime), keeps
the GENA subscription alive, and wakes early when an event, a control request or a lease renewal
asks for it. Every pass runs on the loop's thread; other threads only set flags and wake it.

Failure decisions, as in Flux's controllers:
- the router or the source fails: back off (doubling, capped at the interval), keep the last
  good manifest in force, Ready=False with the reason;
- the manifest is invalid or its commit unverified: stall until the source changes, and keep
  converging the router to the last good revision meanwhile;
- a declared mapping conflicts with a foreign one: apply everything else, Ready=False.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import api, diff, lock
from ..apply import apply
from ..backends.base import Backend
from ..errors import LockTimeout, ManifestError, PortctlError, RouterError, RouterUnreachable
from ..models import MAX_LEASE, Action, Change, Manifest, MappingKey, Plan, PortMapping
from . import status as st
from .config import AgentConfig
from .events import Events
from .logs import JsonLog
from .metrics import Metrics
from .notify import Webhook
from .source import Artifact, FileSource, GitSource, SourceError

RENEW_BELOW = 0.6  # renew once less than 60% of a lease is left ...
RENEW_WAKE = 0.55  # ... and wake for it when 55% is left, so renewal is done before half
LOCK_TIMEOUT = 60.0  # seconds a pass waits for a portctl apply run by hand on the same router
MIN_WAIT = 1.0
FIRST_BACKOFF = 2.0


@dataclass(frozen=True)
class Outcome:
    result: str  # unchanged, changed, failed
    reason: str
    message: str
    wait: float
    changes: tuple[str, ...] = ()


class Agent:
    def __init__(self, config: AgentConfig, *, log: JsonLog | None = None) -> None:
        self.config = config
        self.log = log or JsonLog()
        self.status = st.Status()
        self.metrics = Metrics()
        self.source: FileSource | GitSource = (
            FileSource(config.manifest)
            if config.manifest
            else GitSource(
                config.repo or "",
                config.ref,
                config.path,
                config.checkout_dir(),
                verify=config.verify_signatures,
                allowed_signers=config.allowed_signers,
            )
        )
        self.webhook = Webhook(config.webhook, self.log) if config.webhook else None
        self._wake = threading.Event()
        self.events = Events(self.config, self.log, self.request_reconcile, self._wake.set)
        self._stop = threading.Event()
        self._tickets = threading.Condition()
        self._requested = 0  # reconcile requests taken (control API, events)
        self._completed = 0  # requests a finished pass has served
        self._backend: Backend | None = None
        self._manifest: Manifest | None = None  # the last good manifest: what stays in force
        self._revision = ""  # ... and its revision
        self._bad_revision = ""  # the newest revision, when it failed validation or verification
        self._failures = 0
        self._last_reason = ""
        self._watched: tuple[str, int | None] | None = None  # (WAN address, uptime) at the last check
        # For renewals: what the router should hold, and the leases it had left when last read.
        self._desired: dict[MappingKey, PortMapping] = {}
        self._leases: dict[MappingKey, int] = {}
        self._read_at = 0.0
        self._random = random.Random()

    # -- control (any thread) --------------------------------------------------------------

    def request_reconcile(self) -> int:
        """Ask for a pass as soon as possible; returns a ticket for `wait_for`."""
        with self._tickets:
            self._requested += 1
            ticket = self._requested
        self._wake.set()
        return ticket

    def wait_for(self, ticket: int, timeout: float) -> bool:
        with self._tickets:
            return self._tickets.wait_for(lambda: self._completed >= ticket, timeout)

    def suspend(self) -> None:
        self.status.suspended = True
        self.status.set(st.READY, "False", st.SUSPENDED, "reconciliation is suspended; drift is not healed")
        self.status.set(st.RECONCILING, "False", st.SUSPENDED, "suspended")
        self.log.warning("suspended: the router is no longer kept converged (leases will lapse)")
        self._wake.set()

    def resume(self) -> None:
        if self.status.suspended:
            self.status.suspended = False
            self.log.info("resumed")
            self.request_reconcile()

    def stop(self) -> None:
        """Finish the pass in progress, then leave the loop (SIGTERM)."""
        self._stop.set()
        self._wake.set()

    def ready(self) -> bool:
        ready = self.status.condition(st.READY)
        return ready is not None and ready.status == "True" and self.status.ready_within(2 * self.config.interval)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Reconcile until stop(); then release the owned mappings if asked to."""
        now = time.monotonic()
        next_pass, next_watch = now, now + self.config.watch
        self.log.info("agent started", source=self.source.describe(), interval=self.config.interval)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                now = time.monotonic()
                if self.status.suspended:
                    next_pass = now + self.config.interval
                elif now >= next_pass or self._requested > self._completed:
                    next_pass = time.monotonic() + self._pass()
                    next_watch = time.monotonic() + self.config.watch
                    continue
                elif now >= next_watch:
                    if self._watch():
                        next_pass = now
                        continue
                    next_watch = now + self.config.watch
                due = self.events.tend()
                if due is not None:
                    next_pass = min(next_pass, due)
                wake_at = min(next_pass, next_watch, self.events.next_renewal)
                self._wake.wait(max(0.0, wake_at - time.monotonic()))
        finally:
            self._shutdown()

    def _pass(self) -> float:
        with self._tickets:
            serving = self._requested
        try:
            outcome = self.reconcile()
        except Exception as exc:
            # A bug in one pass must not end the loop that keeps the router converged: report it
            # (with the traceback, for a bug report), start afresh and back off.
            import traceback

            self._drop_backend()
            outcome = self._failed(st.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            self.log.error(f"reconcile crashed: {outcome.message}", traceback=traceback.format_exc())
        with self._tickets:
            self._completed = max(self._completed, serving)
            self._tickets.notify_all()
        return outcome.wait

    def reconcile(self) -> Outcome:
        """One pass: source, router, plan, apply, status. Never raises for an expected failure."""
        started, t0 = time.time(), time.monotonic()
        self.status.set(st.RECONCILING, "True", st.PROGRESSING, f"reconciling {self._revision or 'the source'}")
        outcome = self._reconcile()
        duration = time.monotonic() - t0
        self.metrics.duration.observe(duration)
        self.metrics.reconciles.labels(outcome.result).inc()
        self._report(outcome, started, duration)
        return outcome

    def _reconcile(self) -> Outcome:
        artifact, trouble = self._fetch()
        if artifact is not None:
            self.status.last_attempted_revision = artifact.revision
            trouble = self._load(artifact) or trouble
        if self._manifest is None:
            reason, message = trouble or (st.SOURCE_FETCH_FAILED, "no manifest yet")
            stalled = reason in (st.VALIDATION_FAILED, st.VERIFICATION_FAILED)
            return self._failed(reason, message, stalled=stalled)
        try:
            changes, problem = self._converge(self._manifest)
        except RouterError as exc:
            self._drop_backend()
            reason = st.ROUTER_UNREACHABLE if isinstance(exc, RouterUnreachable) else st.ROUTER_ERROR
            return self._failed(reason, str(exc))
        except LockTimeout as exc:
            return self._failed(st.LOCKED, str(exc))
        if problem:
            return self._failed(*problem, changes=changes)
        if trouble:
            # The router holds the last good revision, but the newest one is not in force.
            stalled = trouble[0] in (st.VALIDATION_FAILED, st.VERIFICATION_FAILED)
            return self._failed(*trouble, stalled=stalled, changes=changes)
        self._failures = 0
        self.status.last_applied_revision = self._revision
        self.status.last_success = time.time()
        self.status.last_success_monotonic = time.monotonic()
        self.metrics.last_success.set(self.status.last_success)
        message = f"applied {self._revision}" + (f": {len(changes)} change(s)" if changes else "; no changes")
        self.status.set(st.READY, "True", st.SUCCEEDED, message)
        self.status.set(st.RECONCILING, "False", st.SUCCEEDED, message)
        self.status.set(st.STALLED, "False", st.SUCCEEDED, "")
        return Outcome("changed" if changes else "unchanged", st.SUCCEEDED, message, self._next_wait(), changes)

    def _fetch(self) -> tuple[Artifact | None, tuple[str, str] | None]:
        try:
            return self.source.fetch(), None
        except SourceError as exc:
            return None, (exc.reason, str(exc))

    def _load(self, artifact: Artifact) -> tuple[str, str] | None:
        """Take a new revision into force if it validates; the last good one stays otherwise."""
        if artifact.revision == self._revision:
            return None
        if artifact.revision == self._bad_revision:
            return st.VALIDATION_FAILED, f"{artifact.revision} is invalid; {self._revision or 'nothing'} stays in force"
        from .. import manifest

        try:
            loaded = manifest.load(artifact.path)
        except ManifestError as exc:
            self._bad_revision = artifact.revision
            kept = self._revision or "nothing"
            self.log.error(
                f"{artifact.revision} is not applied: the manifest is invalid; {kept} stays in force",
                revision=artifact.revision,
                error=str(exc),
            )
            return st.VALIDATION_FAILED, f"{artifact.revision} is invalid, {kept} stays in force: {exc}"
        old = self._revision
        self._manifest, self._revision, self._bad_revision = loaded, artifact.revision, ""
        self.log.bind(revision=artifact.revision)
        self.log.info(f"new revision {artifact.revision}" + (f" (was {old})" if old else ""))
        return None

    def _converge(self, manifest: Manifest) -> tuple[tuple[str, ...], tuple[str, str] | None]:
        """Make the router hold `manifest`; returns the changes made (in words) and a problem, if any."""
        backend = self._connect(manifest)
        # A portctl apply run by hand on the same router waits for this pass, and this pass for it.
        with lock.held(backend.info.udn, LOCK_TIMEOUT):
            return self._converge_locked(manifest, backend)

    def _converge_locked(self, manifest: Manifest, backend: Backend) -> tuple[tuple[str, ...], tuple[str, str] | None]:
        facts = api.read(backend)
        plan = api.plan(
            manifest,
            facts,
            renew_below=RENEW_BELOW,
            max_deletions=self.config.max_deletions,
            allow_empty=self.config.allow_empty,
        )
        before = {e.mapping for e in self.status.inventory}
        if plan.blocked:
            self._set_inventory(manifest, plan, list(facts.table))
            return (), (st.PLAN_BLOCKED, plan.blocked)
        report = apply(_without_conflicts(plan), backend)
        api.remember(backend)
        done = tuple(_words(r.change, str(r.change.key) in before) for r in report.results if r.ok)
        for line in done:
            self.log.info(line)
        # apply() read the table back after writing; a pass that wrote nothing has the one it planned from.
        if report.table is not None:
            table = list(report.table)
        else:
            table = backend.list_mappings() if plan.changes else list(facts.table)
        self._set_inventory(manifest, plan, table)
        if not report.ok:
            failed = "; ".join(f"{r.change.name} {r.change.key}: {r.error}" for r in report.failed)
            return done, (st.APPLY_FAILED, failed or f"not verified: {report.unverified}")
        if plan.conflicts:
            names = "; ".join(f"{k.name} {k.key}: {k.reason}" for k in plan.conflicts)
            return done, ("Conflict", f"not placed: {names}")
        return done, None

    def _connect(self, manifest: Manifest) -> Backend:
        if self._backend is None:
            url = api.router_url(self.config.router, manifest)
            old = self.status.router
            # Once connected, a reconnect reads the router afresh: it may have been replaced.
            backend = api.connect(url, timeout=self.config.timeout, on_request=self.metrics.request, fresh=bool(old))
            if old and old != backend.info.udn:
                self.log.warning(f"the router changed: {old} is now {backend.info.udn} at {backend.info.location}")
            self._backend = backend
            self.status.router = backend.info.udn
            self._watched = self._read_watch(backend)
            self.log.bind(router=backend.info.location)
            self.metrics.set_info(self._revision, backend.info.udn)
            self.events.attach(backend)
        return self._backend

    def _drop_backend(self) -> None:
        self._backend = None
        self._watched = None
        self.events.forget()  # a router that went away has forgotten its subscribers

    def _set_inventory(self, manifest: Manifest, plan: Plan, table: list[PortMapping]) -> None:
        now = time.time()
        entries = []
        claims = diff.owned_rows(manifest, table, self._backend.learned if self._backend else None)
        for row in table:
            if row.key in claims:
                name = claims[row.key].name
                target = f"{row.internal_client}:{row.internal_port}"
                expires = now + row.lease if row.lease else None
                entries.append(st.InventoryEntry(name, str(row.key), target, expires))
        self.status.inventory = tuple(entries)
        self._desired = {m.key: m for m in plan.desired}
        self._leases = {row.key: row.lease for row in table if row.key in self._desired}
        self._read_at = time.monotonic()
        owned = len(entries)
        self.metrics.mappings.labels("owned").set(owned)
        self.metrics.mappings.labels("declared").set(len(plan.desired) + len(plan.conflicts))
        self.metrics.mappings.labels("foreign").set(len(table) - owned)
        self.metrics.mappings.labels("conflict").set(len(plan.conflicts))
        self.metrics.set_inventory(entries)
        if self._backend is not None:
            self.metrics.set_info(self._revision, self._backend.info.udn)

    def _next_wait(self) -> float:
        """The interval with jitter, or sooner when an owned lease needs renewing first."""
        wait = self.config.interval * (1 + self._random.uniform(-self.config.jitter, self.config.jitter))
        elapsed = time.monotonic() - self._read_at
        for key, want in self._desired.items():
            left = self._leases.get(key, 0)
            if left:
                full = want.lease or MAX_LEASE
                wait = min(wait, left - RENEW_WAKE * full - elapsed)
        return max(MIN_WAIT, wait)

    def _failed(self, reason: str, message: str, *, stalled: bool = False, changes: tuple[str, ...] = ()) -> Outcome:
        self.status.set(st.READY, "False", reason, message)
        self.status.set(st.RECONCILING, "False", reason, message)
        self.status.set(st.STALLED, "True" if stalled else "False", reason if stalled else "", "")
        if stalled:
            # Retrying cannot help until the source changes; look again at the normal interval.
            self._failures = 0
            return Outcome("failed", reason, message, self._next_wait(), changes)
        self._failures += 1
        cap = min(self.config.max_backoff, self.config.interval)
        wait = min(cap, FIRST_BACKOFF * 2 ** (self._failures - 1))
        wait *= 1 + self._random.uniform(-self.config.jitter, self.config.jitter)
        return Outcome("failed", reason, message, max(MIN_WAIT, wait), changes)

    def _report(self, outcome: Outcome, started: float, duration: float) -> None:
        result = st.Result(
            started, duration, outcome.result, self._revision, outcome.reason, outcome.message, outcome.changes
        )
        self.status.record(result)
        fields: dict[str, Any] = {"duration": round(duration, 3), "next_run": round(outcome.wait, 1)}
        if outcome.result == "failed":
            self.log.error(f"reconcile failed ({outcome.reason}): {outcome.message}", reason=outcome.reason, **fields)
        else:
            self.log.info(f"reconciled: {outcome.message}", **fields)
        newly_failed = outcome.result == "failed" and outcome.reason != self._last_reason
        if self.webhook and (outcome.changes or newly_failed):
            self.webhook.send({"agent": "portctl", **result.to_json()})
        self._last_reason = "" if outcome.result != "failed" else outcome.reason

    # -- between passes --------------------------------------------------------------------

    def _watch(self) -> bool:
        """Cheap check of the router; True when it changed (new WAN address, restart, gone)."""
        backend = self._backend
        if backend is None:
            return False
        try:
            seen = self._read_watch(backend)
        except RouterError as exc:
            self.log.warning(f"the router stopped answering: {exc}")
            self._drop_backend()
            return True
        old, self._watched = self._watched, seen
        if old is None:
            return False
        if seen[0] != old[0]:
            self.log.warning(f"the router's WAN address changed from {old[0] or 'none'} to {seen[0] or 'none'}")
            return True
        if seen[1] is not None and old[1] is not None and seen[1] < old[1]:
            self.log.warning("the router restarted (its uptime went back); checking its table")
            self._drop_backend()
            return True
        return False

    @staticmethod
    def _read_watch(backend: Backend) -> tuple[str, int | None]:
        return backend.external_address(), backend.uptime()

    def _shutdown(self) -> None:
        self.events.close()
        if self.config.release_on_exit and self._manifest is not None:
            self._release(self._manifest)
        self.log.info("agent stopped")

    def _release(self, manifest: Manifest) -> None:
        try:
            backend = self._connect(manifest)
            report = apply(api.destroy_plan(manifest, api.read(backend)), backend)
        except PortctlError as exc:
            self.log.error(f"could not release the owned mappings: {exc}")
            return
        for r in report.results:
            if r.ok:
                self.log.info(f"released {r.change.key} ({r.change.name})")
            else:
                self.log.error(f"could not release {r.change.key} ({r.change.name}): {r.error}")


def _without_conflicts(plan: Plan) -> Plan:
    """The plan minus its conflicting mappings (which have no changes): the rest can still be healed."""
    from dataclasses import replace

    return replace(plan, conflicts=())


def _words(change: Change, was_owned: bool) -> str:
    m = change.after or change.before
    target = f"{m.internal_client}:{m.internal_port}" if m else "?"
    what = f"{change.key} -> {target} ({change.name})"
    if change.action == Action.ADD:
        if was_owned:
            return f"restored {what}: it had gone from the router"
        return f"added {what}"
    if change.action == Action.RENEW:
        return f"renewed the lease of {what}"
    if change.action == Action.REMOVE:
        return f"removed {what}: {change.reason}" + (f"; it {change.note}" if change.note else "")
    fields = ", ".join(f"{f.field} {f.before} -> {f.after}" for f in change.fields)
    return f"changed {what}: {fields or change.reason}"
