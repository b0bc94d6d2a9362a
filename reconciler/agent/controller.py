"""The pull loop: fetch the manifest, read the router, plan, apply, report; then decide when to run again.

`Agent.reconcile()` is one pass and returns how long to wait before the next. `Agent.run()` is the
loop around it: it also checks the router cheaply between passes (WAN address, uptime or epoch), keeps
the GENA subscription alive, and wakes early when an event, a control request or a lease renewal
asks for it. Every pass runs on the loop's thread; other threads only set flags and wake it.

Several manifests (a list of files, or a directory) are each a Track with its own owner, revision and
status section; one pass takes the router's lock once, reads the table once and plans and applies
them in turn, each on the table the one before left. One that fails does not stop the others.

Failure decisions, as in Flux's controllers:
- the router or the source fails: back off (doubling, capped at the interval), keep the last
  good manifest in force, Ready=False with the reason;
- the manifest is invalid or its commit unverified: stall until the source changes, and keep
  converging the router to the last good revision meanwhile;
- a declared mapping conflicts with a foreign one: apply everything else, Ready=False;
- anything else a pass raises (a revision that crashes the loader, odd text from the router, a
  bug): report it (logged once while it recurs, a condition with a reason, counted) and keep
  healing to the last good revision;
- a local manifest that is still changing (an editor or a deploy mid-write): keep the last good
  revision until the file has been still for the settle interval.

Every read of time goes through two injected clocks: `clock` (time.monotonic unless a test hands in
another) for scheduling, leases and durations, and `wall` (time.time) for the stamps people read.
`step()` is one turn of the loop and returns when to wake, so a test can drive the loop on a
virtual clock without a thread.
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from .. import api, diff, lock, renewal
from ..apply import apply
from ..backends.base import Backend
from ..backends.http import Observer
from ..boot import Boot, restarted
from ..cache import Cache, default_directory
from ..errors import LockTimeout, ManifestError, PortctlError, Problem, RouterError, RouterUnreachable
from ..models import (
    MAX_LEASE,
    Action,
    ApplyReport,
    Change,
    Drift,
    Manifest,
    MappingKey,
    PinholeAction,
    PinholeChange,
    Plan,
    PortMapping,
)
from ..ownerstore import OwnershipStore
from . import publish
from . import status as st
from .config import AgentConfig
from .events import Events
from .logs import JsonLog
from .memory import DriftMemory
from .metrics import Metrics
from .notify import Webhook
from .source import Artifact, FileSource, GitSource, SourceError, Unsettled, expand
from .watch import Sample
from .watch import read as read_watch

if TYPE_CHECKING:
    from ..api import Facts
    from ..pinholeaccess import PinholeFacts

LOCK_TIMEOUT = 60.0  # seconds a pass waits for a portctl apply run by hand on the same router
MIN_WAIT = 1.0
FIRST_BACKOFF = 2.0
_T = TypeVar("_T")


@dataclass
class Track:
    """One followed manifest file: what is in force, what the last pass made of it, what it owns."""

    file: str  # as followed: a local path, or a path in the repository
    source: FileSource | None  # a local file's (it keeps its settle state); None: the repository's checkout
    manifest: Manifest | None = None  # the last good manifest: what stays in force
    revision: str = ""  # ... and its revision
    attempted: str = ""  # the newest revision seen
    # The newest revision when it could not be taken into force, and why (reason, message).
    bad_revision: str = ""
    bad_trouble: tuple[str, str] = ("", "")
    # Drift: the rows last seen converged (written, or found as wanted), which tell a row that
    # drifted from an edit of the manifest; and the drift of warn mappings left unwritten, in words.
    # `applied` is kept in the drift memory (memory.py) under `recalled` (router identity, owner, file).
    applied: dict[MappingKey, PortMapping] = field(default_factory=dict)
    recalled: tuple[str, str, str] | None = None
    drift: dict[MappingKey, str] = field(default_factory=dict)
    # For renewals: what the router should hold, and the leases it had left when last read (on `clock`).
    desired: dict[MappingKey, PortMapping] = field(default_factory=dict)
    leases: dict[MappingKey, int] = field(default_factory=dict)
    read_at: float = 0.0
    # ... and the declared pinholes held after the last pass: (expiry on `wall`, lease).
    pinhole_leases: tuple[tuple[float, int], ...] = ()
    inventory: tuple[st.InventoryEntry, ...] = ()
    declared: int = 0
    conflicts: int = 0
    # The last pass's word on it.
    result: str = ""
    ready: str = "Unknown"
    reason: str = st.PROGRESSING
    message: str = "no reconcile has run yet"
    changes: tuple[str, ...] = ()

    def end(self, result: str, ready: str, reason: str, message: str, changes: tuple[str, ...]) -> None:
        self.result, self.ready, self.reason, self.message, self.changes = result, ready, reason, message, changes

    def section(self) -> st.Section:
        return st.Section(
            self.file,
            self.manifest.owner if self.manifest is not None else "",
            self.revision,
            self.attempted,
            self.result,
            self.ready,
            self.reason,
            self.message,
            self.changes,
            tuple(self.drift.values()),
            self.inventory,
        )


@dataclass(frozen=True)
class Outcome:
    result: str  # unchanged, changed, failed
    reason: str
    message: str
    wait: float
    changes: tuple[str, ...] = ()


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        log: JsonLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cache: Cache | None = None,
        observe: Observer | None = None,
        connect: Callable[..., Backend] = api.connect,
    ) -> None:
        self.config = config
        self._connect_to = connect  # api.connect's signature: the backend for a router URL (None: discover)
        # One cache for the agent's life, shared with any portctl run by hand: its writes are locked.
        # Lessons are stamped and aged by the agent's wall clock.
        self.cache = cache or Cache(default_directory(), clock=wall)
        self.memory = DriftMemory(self.cache)  # what each manifest's rows were last seen converged as
        self._memory_problem = ""  # what went wrong with the drift memory, as last logged
        self.observe = observe  # every exchange with the router (--trace)
        self.log = log or JsonLog()
        self.clock = clock
        self.wall = wall
        self.status = st.Status(clock, wall)
        self.metrics = Metrics()
        # Several manifests (a list, or a directory) are followed each on its own Track; one file is
        # followed as it always was, its revision the agent's.
        entries = config.manifests
        self._several = len(entries) > 1 or bool(config.manifest and os.path.isdir(entries[0]))
        single = entries[0] if len(entries) == 1 else "."  # several paths of a repository: its whole tree
        self.source: FileSource | GitSource = (
            FileSource(single, settle=config.settle, clock=clock)
            if config.manifest
            else GitSource(
                config.repo or "",
                config.ref,
                single,
                config.checkout_dir(),
                verify=config.verify_signatures,
                allowed_signers=config.allowed_signers,
            )
        )
        self._single = Track(entries[0], None)
        self._tracks: dict[str, Track] = {} if self._several else {entries[0]: self._single}
        self.webhook = Webhook(config.webhook, self.log) if config.webhook else None
        self.publisher = _publisher(config)
        self._unpublished: dict[str, Any] | None = None  # the pass's snapshot, for the publisher
        self._wake = threading.Event()
        self.events = Events(
            self.config, self.log, self.request_reconcile, self._wake.set, clock, wall, observe=observe
        )
        self._stop = threading.Event()
        self._tickets = threading.Condition()
        self._requested = 0  # reconcile requests taken (control API, events)
        self._completed = 0  # requests a finished pass has served
        self._backend: Backend | None = None
        self._failures = 0
        self._last_reason = ""
        self._errors_logged: set[str] = set()  # errors of passes already logged since the last success
        self._step_problems: dict[str, str] = {}  # step between passes -> the problem it has, as logged
        self._watched: Sample | None = None  # the router's address and uptime at the last check
        # The router's boot as last read, kept across reconnects to the same router (identity): a
        # router that was down a while and came back has restarted, though the connection was new.
        self._boot: Boot | None = None
        self._boot_of = ""
        self._restart = ""  # why the router is known to have restarted, until a pass restores its table
        self._restored: tuple[int, str] | None = None  # what that pass restored, for its condition
        self._fresh_drift = False  # the last pass noticed drift not reported before
        self._random = random.Random()
        self._next_pass = clock()  # the loop's schedule, on `clock`
        self._next_watch = self._next_pass + config.watch

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
        if self.status.suspend():
            self.log.warning("suspended: the router is no longer kept converged (leases will lapse)")
        self._wake.set()

    def resume(self) -> None:
        if self.status.resume():
            self.log.info("resumed")
            self.request_reconcile()

    def stop(self) -> None:
        """Finish the pass in progress, then leave the loop (SIGTERM)."""
        self._stop.set()
        self._wake.set()

    def describe_source(self) -> str:
        """Where the manifests come from, in words: the one file's source, or the files and directories followed."""
        if len(self.config.manifests) == 1:
            return self.source.describe()
        listed = ", ".join(self.config.manifests)
        if isinstance(self.source, GitSource):
            return f"{self.source.url} {self.source.ref}:{listed}"
        return listed

    def ready(self) -> bool:
        ready = self.status.condition(st.READY)
        return ready is not None and ready.status == "True" and self.status.ready_within(2 * self.config.interval)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Reconcile until stop(); then release the owned mappings if asked to."""
        self.log.info("agent started", source=self.describe_source(), interval=self.config.interval)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                wake_at = self.step()
                self._wake.wait(max(0.0, wake_at - self.clock()))
        finally:
            self._shutdown()

    def step(self) -> float:
        """One turn of the loop: a pass, a check of the router or the event subscription, whichever
        is due; returns the time on `clock` to wake at (now, when there may be more to do at once)."""
        now = self.clock()
        if self.status.suspended:
            # Nothing is due while suspended, the check of the router included (it would only ask for
            # a pass): a check left in the past would have the loop spin.
            self._next_pass = self._next_watch = now + self.config.interval
        elif now >= self._next_pass or self.pending():
            self._next_pass = self.clock() + self._pass()
            self._next_watch = self.clock() + self.config.watch
            return self.clock()
        elif now >= self._next_watch:
            self._next_watch = now + self.config.watch
            if self._guarded("checking the router", self._watch, False):
                self._next_pass = now
                return now
        due = self._guarded("tending the event subscription", self.events.tend, None)
        if due is not None:
            self._next_pass = min(self._next_pass, due)
        return min(self._next_pass, self._next_watch, self.events.next_due)

    def pending(self) -> bool:
        """Has a reconcile been asked for (control API, event) that no pass has served yet?"""
        with self._tickets:
            return self._requested > self._completed

    def _guarded(self, what: str, step: Callable[[], _T], fallback: _T) -> _T:
        """Run a step of the loop between passes; an exception is reported, never the end of the loop."""
        try:
            done = step()
        except Exception as exc:
            self._note(what, st.INTERNAL_ERROR, f"{what} failed: {type(exc).__name__}: {exc}", traceback.format_exc())
            return fallback
        self._note(what, "", "")
        return done

    def _note(self, what: str, reason: str, message: str, detail: str = "") -> None:
        """Count and log a problem of a step between passes; logged when it starts or changes, not while it recurs."""
        if not message:
            if self._step_problems.pop(what, None) is not None:
                self.status.note(what, "", "")
            return
        self.metrics.errors.labels(reason).inc()
        if self._step_problems.get(what) != message:
            self.status.note(what, reason, message)
            self._step_problems[what] = message
            self.log.error(message, reason=reason, traceback=detail or None)

    def _log_once(self, reason: str, message: str, detail: str = "") -> None:
        """Log an error of a pass the first time it is seen since the last success, not at every retry."""
        key = f"{reason}: {message}"
        if key not in self._errors_logged:
            self._errors_logged.add(key)
            self.log.error(message, reason=reason, traceback=detail or None)

    def _pass(self) -> float:
        with self._tickets:
            serving = self._requested
        try:
            outcome = self.reconcile()
        except Exception as exc:
            # A bug in one pass must not end the loop that keeps the router converged: report it
            # (with the traceback, for a bug report), start afresh and back off.
            self._drop_backend()
            message = f"{type(exc).__name__}: {exc}"
            self._log_once(st.INTERNAL_ERROR, f"reconcile crashed: {message}", traceback.format_exc())
            outcome = self._failed(st.INTERNAL_ERROR, message)
            self.metrics.reconciles.labels("failed").inc()
            self._report(outcome, self.wall(), 0.0)
        with self._tickets:
            self._completed = max(self._completed, serving)
            self._tickets.notify_all()
        return outcome.wait

    def reconcile(self) -> Outcome:
        """One pass: source, router, plan, apply, status. Never raises for an expected failure."""
        started, t0 = self.wall(), self.clock()
        self._restored = None
        self.status.set(st.RECONCILING, "True", st.PROGRESSING, f"reconciling {self._revision or 'the source'}")
        outcome = self._reconcile()
        duration = self.clock() - t0
        self.metrics.duration.observe(duration)
        self.metrics.reconciles.labels(outcome.result).inc()
        self._report(outcome, started, duration)
        return outcome

    @property
    def _revision(self) -> str:
        """The revision in force: the one manifest's; with several, each file's (one commit of a repository is one)."""
        revisions = [t.revision for t in self._tracks.values() if t.revision]
        if not self._several:
            return revisions[0] if revisions else ""
        if not revisions:
            return ""
        if len(set(revisions)) == 1 and not self.config.manifest:
            return revisions[0]
        return ", ".join(f"{t.file}@{t.revision}" for t in self._tracks.values() if t.revision)

    def _reconcile(self) -> Outcome:
        if not self._several:
            artifact, trouble, settling = self._fetch()
            if artifact is not None and os.path.isdir(artifact.path):
                # The repository's path is a directory: its manifests, from this commit on.
                self._several = True
            else:
                return self._reconcile_one(self._single, artifact, trouble, settling)
        else:
            artifact, trouble, settling = self._fetch() if not self.config.manifest else (None, None, None)
        return self._reconcile_many(artifact, trouble)

    def _reconcile_one(
        self, track: Track, artifact: Artifact | None, trouble: tuple[str, str] | None, settling: Unsettled | None
    ) -> Outcome:
        """The pass of an agent that follows one manifest file."""
        if artifact is not None:
            self.status.attempted(artifact.revision)
            track.attempted = artifact.revision
            trouble = self._load(track, artifact) or trouble
        if track.manifest is None:
            if settling is not None and trouble is None:
                return self._end_one(track, self._settling(settling, None))
            reason, message = trouble or (st.SOURCE_FETCH_FAILED, "no manifest yet")
            return self._end_one(track, self._failed(reason, message, stalled=self._stalls(track, trouble)))
        try:
            changes, problem = self._converge([track])[track.file]
        except RouterError as exc:
            self._drop_backend()
            reason = st.ROUTER_UNREACHABLE if isinstance(exc, RouterUnreachable) else st.ROUTER_ERROR
            return self._end_one(track, self._failed(reason, str(exc)))
        except LockTimeout as exc:
            return self._end_one(track, self._failed(st.LOCKED, str(exc)))
        except Exception as exc:
            # Odd answers from the router or a bug: start afresh with the router and back off.
            self._drop_backend()
            return self._end_one(track, self._failed(*self._crashed(exc)))
        if problem:
            return self._end_one(track, self._failed(*problem, changes=changes))
        if trouble:
            # The router holds the last good revision, but the newest one is not in force.
            return self._end_one(track, self._failed(*trouble, stalled=self._stalls(track, trouble), changes=changes))
        outcome = self._succeeded(changes)
        if settling is not None:
            outcome = self._settling(settling, outcome)
        return self._end_one(track, outcome)

    def _end_one(self, track: Track, outcome: Outcome) -> Outcome:
        ready = "True" if outcome.result != "failed" and track.manifest is not None else "False"
        if outcome.reason == st.SOURCE_SETTLING and track.manifest is None:
            ready = "Unknown"
        track.end(outcome.result, ready, outcome.reason, outcome.message, outcome.changes)
        self._take_sections()
        return outcome

    def _succeeded(self, changes: tuple[str, ...]) -> Outcome:
        """Ready: the router holds what is in force."""
        self._failures = 0
        self._errors_logged.clear()
        self.metrics.last_success.set(self.status.succeeded(self._revision))
        message = f"applied {self._revision}" + (f": {len(changes)} change(s)" if changes else "; no changes")
        reason = st.SUCCEEDED
        drift = self._all_drift()
        if self._restored is not None:
            # The pass that healed a restart says so until the next one.
            reason, message = st.ROUTER_RESTARTED, f"{self._restored[1]}; {message}"
            self._restored = None
        elif drift:
            # Converged as asked: warn mappings' drift is left as it is, and said.
            reason = st.DRIFT_DETECTED
            message += f"; drift left as is (drift: warn): {len(drift)} mapping(s), see the Drifted condition"
        self.status.set(st.READY, "True", reason, message)
        self.status.set(st.RECONCILING, "False", reason, message)
        self.status.set(st.STALLED, "False", reason, "")
        result = "changed" if changes else "unchanged"
        return Outcome(result, reason, message, self._next_wait(), changes)

    def _reconcile_many(self, artifact: Artifact | None, source_trouble: tuple[str, str] | None) -> Outcome:
        """The pass of an agent that follows several manifests: each is loaded, planned and applied on
        its own (one failing does not stop the others), under one lock and one read of the router."""
        troubles: dict[str, tuple[str, str]] = {}
        settling: dict[str, Unsettled] = {}
        if self.config.manifest:
            files, problems = expand("", self.config.manifests)
        elif artifact is not None and isinstance(self.source, GitSource):
            files, problems = expand(self.source.workdir, self.config.manifests)
        else:
            files, problems = tuple(self._tracks), ()
        if problems:
            source_trouble = (st.SOURCE_FETCH_FAILED, "; ".join(problems))
        self._follow(files)
        for track in self._tracks.values():
            got = self._fetch_track(track, artifact)
            if isinstance(got, Unsettled):
                settling[track.file] = got
            elif isinstance(got, tuple):
                troubles[track.file] = got
            elif got is not None:
                track.attempted = got.revision
                trouble = self._load(track, got)
                if trouble:
                    troubles[track.file] = trouble
        attempted = [t.attempted for t in self._tracks.values() if t.attempted]
        if attempted:
            self.status.attempted(
                attempted[0]
                if len(set(attempted)) == 1 and not self.config.manifest
                else ", ".join(f"{t.file}@{t.attempted}" for t in self._tracks.values() if t.attempted)
            )
        active = [t for t in self._tracks.values() if t.manifest is not None]
        for owner in {t.manifest.owner for t in active if t.manifest is not None}:
            same = [t for t in active if t.manifest is not None and t.manifest.owner == owner]
            if len(same) > 1:
                names = " and ".join(t.file for t in same)
                for t in same:
                    troubles[t.file] = (
                        st.DUPLICATE_OWNER,
                        f"{names} both declare owner {owner!r}: neither is applied until each has its own owner",
                    )
        active = [t for t in active if t.file not in troubles or troubles[t.file][0] != st.DUPLICATE_OWNER]
        results: dict[str, tuple[tuple[str, ...], tuple[str, str] | None]] = {}
        failure: tuple[str, str] | None = None
        if active:
            try:
                results = self._converge(active)
            except RouterError as exc:
                self._drop_backend()
                failure = (st.ROUTER_UNREACHABLE if isinstance(exc, RouterUnreachable) else st.ROUTER_ERROR, str(exc))
            except LockTimeout as exc:
                failure = (st.LOCKED, str(exc))
            except Exception as exc:
                self._drop_backend()
                failure = self._crashed(exc)
        changes: tuple[str, ...] = ()
        said: list[tuple[str, str, str, bool]] = []  # (file, reason, message, stalls) of each manifest not converged
        for track in self._tracks.values():
            done, problem = results.get(track.file, ((), None))
            changes += tuple(f"{track.file}: {line}" for line in done)
            trouble = troubles.get(track.file)
            why = failure if track in active and failure else problem or trouble
            if why is None and track.manifest is None:
                why = (st.SOURCE_SETTLING, str(settling[track.file])) if track.file in settling else None
                why = why or (st.SOURCE_FETCH_FAILED, "no manifest yet")
                if why[0] == st.SOURCE_SETTLING:
                    track.end("unchanged", "Unknown", *why, ())
                    continue
            if why is None:
                result = "changed" if done else "unchanged"
                message = f"applied {track.revision}" + (f": {len(done)} change(s)" if done else "; no changes")
                if track.file in settling:
                    message += f"; {settling[track.file]}; {track.revision} stays in force meanwhile"
                track.end(result, "True", st.SUCCEEDED, message, done)
                continue
            stalls = why is trouble and self._stalls(track, trouble)
            track.end("failed", "False", why[0], why[1], done)
            if not (track in active and failure):
                said.append((track.file, why[0], why[1], stalls))
        if source_trouble:
            said.insert(0, ("", *source_trouble, self._stalls(None, source_trouble)))
        self._take_sections()
        if failure:
            return self._failed(*failure, changes=changes)
        if not active and not said:
            if settling:  # every file is still being written: nothing in force yet, nothing wrong either
                return self._settling(next(iter(settling.values())), None)
            return self._failed(st.SOURCE_FETCH_FAILED, "no manifest yet")
        if said:
            message = "; ".join(f"{file}: {message}" if file else message for file, _, message, _ in said)
            outcome = self._failed(said[0][1], message, stalled=all(s[3] for s in said), changes=changes)
        else:
            outcome = self._succeeded(changes)
        if settling:
            wait = min(outcome.wait, *(s.retry_in for s in settling.values()))
            outcome = replace(outcome, wait=max(MIN_WAIT, wait))
        return outcome

    def _follow(self, files: tuple[str, ...]) -> None:
        """The manifests followed from now on, in order; one that left keeps nothing (its mappings stay as they are)."""
        tracks = {}
        for file in files:
            tracks[file] = self._tracks.get(file) or Track(
                file, FileSource(file, settle=self.config.settle, clock=self.clock) if self.config.manifest else None
            )
        self._tracks = tracks
        self.metrics.keep_manifests(files)

    def _fetch_track(self, track: Track, checkout: Artifact | None) -> Artifact | Unsettled | tuple[str, str] | None:
        """A followed manifest's newest revision: its file's, or the checked-out commit's."""
        if track.source is not None:
            try:
                return track.source.fetch()
            except Unsettled as exc:
                return exc
            except SourceError as exc:
                return exc.reason, str(exc)
            except Exception as exc:
                return self._crashed(exc)
        if checkout is None or not isinstance(self.source, GitSource):
            return None  # the repository could not be fetched: what is in force stays
        path = os.path.join(self.source.workdir, track.file)
        if not os.path.isfile(path):
            return st.SOURCE_FETCH_FAILED, f"{track.file} does not exist at {checkout.revision}"
        return Artifact(checkout.revision, path)

    def _fetch(self) -> tuple[Artifact | None, tuple[str, str] | None, Unsettled | None]:
        try:
            return self.source.fetch(), None, None
        except Unsettled as exc:
            return None, None, exc
        except SourceError as exc:
            return None, (exc.reason, str(exc)), None
        except Exception as exc:
            return None, self._crashed(exc), None

    def _crashed(self, exc: Exception) -> tuple[str, str]:
        """An unexpected exception in a pass: logged with its traceback once while it recurs."""
        message = f"{type(exc).__name__}: {exc}"
        self._log_once(st.INTERNAL_ERROR, f"reconcile crashed: {message}", traceback.format_exc())
        return st.INTERNAL_ERROR, message

    def _stalls(self, track: Track | None, trouble: tuple[str, str] | None) -> bool:
        """Retrying cannot help until the source changes: the newest revision cannot be taken into force."""
        return trouble is not None and (
            trouble[0] in (st.VALIDATION_FAILED, st.VERIFICATION_FAILED, st.DUPLICATE_OWNER)
            or (track is not None and bool(track.bad_revision) and trouble == track.bad_trouble)
        )

    def _settling(self, settling: Unsettled, converged: Outcome | None) -> Outcome:
        """The local manifest is still changing: look again once it may have settled."""
        kept = self._revision or "nothing"
        message = f"{settling}; {kept} stays in force meanwhile"
        self.status.set(st.RECONCILING, "True", st.SOURCE_SETTLING, message)
        if converged is None:
            self.status.set(st.READY, "Unknown", st.SOURCE_SETTLING, message)
            return Outcome("unchanged", st.SOURCE_SETTLING, message, max(MIN_WAIT, settling.retry_in))
        wait = max(MIN_WAIT, min(converged.wait, settling.retry_in))
        return Outcome(converged.result, converged.reason, f"{converged.message}; {message}", wait, converged.changes)

    def _load(self, track: Track, artifact: Artifact) -> tuple[str, str] | None:
        """Take a new revision into force if it loads; the last good one stays otherwise."""
        if artifact.revision == track.revision:
            return None
        if artifact.revision == track.bad_revision:
            return track.bad_trouble
        kept = track.revision or "nothing"
        try:
            loaded = _load_manifest(artifact, self.cache)
        except ManifestError as exc:
            self.log.error(
                f"{artifact.revision} is not applied: the manifest is invalid; {kept} stays in force",
                revision=artifact.revision,
                error=str(exc),
            )
            trouble = (st.VALIDATION_FAILED, f"{artifact.revision} is invalid, {kept} stays in force: {exc}")
        except Exception as exc:
            # A revision that crashes the loader is as unusable as an invalid one, and stays so:
            # it is not tried again until the source changes, and the last good one stays in force.
            self.log.error(
                f"{artifact.revision} is not applied: loading it crashed; {kept} stays in force",
                revision=artifact.revision,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            trouble = (
                st.INTERNAL_ERROR,
                f"{artifact.revision} could not be loaded ({type(exc).__name__}: {exc}), {kept} stays in force",
            )
        else:
            old = track.revision
            track.manifest, track.revision, track.bad_revision = loaded, artifact.revision, ""
            if not self._several:
                self.log.bind(revision=artifact.revision)
            where = f" of {track.file}" if self._several else ""
            self.log.info(f"new revision{where} {artifact.revision}" + (f" (was {old})" if old else ""))
            return None
        track.bad_revision, track.bad_trouble = artifact.revision, trouble
        return trouble

    def _converge(self, tracks: list[Track]) -> dict[str, tuple[tuple[str, ...], tuple[str, str] | None]]:
        """Make the router hold each manifest in turn; returns, per file, the changes made (in words)
        and a problem, if any."""
        first = tracks[0].manifest
        assert first is not None
        connected = self._backend is not None
        backend = self._connect(first)
        if connected and not backend.capabilities.can_list:
            # What such a router holds is only what this host recorded of its grants, as good as the
            # router's memory: its epoch is asked first, so this pass sees a restart, not a later check.
            self._watched = self._read_watch(backend)
            self._saw_boot(backend.info.identity, self._watched)
        # A portctl apply run by hand on the same router waits for this pass, and this pass for it.
        with lock.held(self.cache.lock_directory, backend.info.identity, LOCK_TIMEOUT):
            done = self._converge_locked(tracks, backend)
        self._publish_git()  # after the lock: a slow remote must not hold up a portctl apply run by hand
        return done

    def _converge_locked(
        self, tracks: list[Track], backend: Backend
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, str] | None]]:
        """One read of the router, then each manifest planned against the table as the one before it
        left it (its writes read back), so no plan works from rows another manifest just changed."""
        api.relearn(backend, self.cache, self.wall())  # `portctl forget` may have run since the last pass
        before = {e.mapping for e in self.status.inventory}
        results: dict[str, tuple[tuple[str, ...], tuple[str, str] | None]] = {}
        facts: Facts | None = None
        table: list[PortMapping] = []
        restored = reopened = 0
        wrote = False
        for track in tracks:
            manifest = track.manifest
            assert manifest is not None
            if facts is None:
                facts = api.read(backend, self.cache, manifest, timeout=self.config.timeout, clock=self.wall)
                table = list(facts.table)
            else:
                facts = self._facts(backend, manifest, table, facts.store)
            self._recall(track, backend.info.identity, manifest.owner)
            plan = api.plan(
                manifest,
                facts,
                renew_below=renewal.AGENT_BELOW,
                max_deletions=self.config.max_deletions,
                allow_empty=self.config.allow_empty,
                clock=self.wall,
                applied=track.applied,
                withhold_drift=True,
            )
            self._take_drift(track, plan)
            if plan.blocked:
                self._set_inventory(track, manifest, plan, table, facts.store)
                self._remember(track, plan, None)
                results[track.file] = ((), (st.PLAN_BLOCKED, plan.blocked))
                continue
            report = apply(
                _without_conflicts(plan), backend, store=facts.store, pinholes=facts.pinholes, clock=self.wall
            )
            wrote = True
            self._remember(track, plan, report)
            api.remember(backend, self.cache)
            done = tuple(_words(r.change, str(r.change.key) in before) for r in report.results if r.ok)
            done += tuple(_pinhole_words(r.change) for r in report.pinholes if r.ok)
            for line in done:
                self.log.info(line, **({"manifest": track.file} if self._several else {}))
            for p in report.pinholes:
                if p.warning:
                    where = {"manifest": track.file} if self._several else {}
                    self.log.warning(f"pinhole {p.change.name}: {p.warning}", pinhole=p.change.name, **where)
            restored += sum(
                1 for r in report.results if r.ok and r.change.action == Action.ADD and str(r.change.key) in before
            )
            # A pinhole held before, opened again: the restart took it (pinholeplan says why).
            reopened += sum(
                1 for r in report.pinholes if r.ok and r.change.action is PinholeAction.OPEN and r.change.before
            )
            # apply() read the table back after writing; a pass that wrote nothing has the one it planned from.
            if report.table is not None:
                table = list(report.table)
            elif plan.changes:
                table = backend.list_mappings()
            self._set_inventory(track, manifest, plan, table, facts.store, _granted(report))
            track.pinhole_leases = _pinhole_leases(manifest, facts.pinholes)
            problem: tuple[str, str] | None = None
            if not report.ok:
                failed = "; ".join(
                    [f"{r.change.name} {r.change.key}: {r.error}" for r in report.failed]
                    + [f"pinhole {r.change.name}: {r.error}" for r in report.pinholes if not r.ok]
                )
                problem = (st.APPLY_FAILED, failed or f"not verified: {report.unverified}")
            elif plan.conflicts:
                names = "; ".join(f"{k.name} {k.key}: {k.reason}" for k in plan.conflicts)
                problem = (st.CONFLICT, f"not placed: {names}")
            results[track.file] = (done, problem)
        self._take_totals(table)
        if self._restart and wrote:
            words = f"router restarted: {restored} owned mapping{'' if restored == 1 else 's'}"
            if reopened:
                words += f" and {reopened} IPv6 pinhole{'' if reopened == 1 else 's'}"
            words += " restored"
            self.log.info(words, restored=restored, pinholes_restored=reopened, cause=self._restart)
            self._restored, self._restart = (restored + reopened, f"{words} ({self._restart})"), ""
            for file, (done, problem) in results.items():
                if problem and problem[0] == st.APPLY_FAILED:
                    # The failure is the condition's reason; the restart is said too.
                    results[file] = (done, (st.APPLY_FAILED, f"{self._restored[1]}; {problem[1]}"))
                    self._restored = None
                    break
        if facts is not None:
            self._publish(tracks, backend, table, facts)
        return results

    def _facts(self, backend: Backend, manifest: Manifest, table: list[PortMapping], store: OwnershipStore) -> Facts:
        """What api.read() gives for `manifest`, on the table as the previous manifest left it (not read again)."""
        held = api.read_pinholes(manifest, backend, self.cache, timeout=self.config.timeout, clock=self.wall)
        return api.Facts(backend, list(table), store, held)

    def _connect(self, manifest: Manifest) -> Backend:
        if self._backend is None:
            url = api.router_url(self.config.router, manifest)
            old = self.status.router
            # Once connected, a reconnect reads the router afresh: it may have been replaced.
            backend = self._connect_to(
                url,
                self.cache,
                timeout=self.config.timeout,
                on_request=self.metrics.request,
                observe=self.observe,
                fresh=bool(old),
                order=api.protocol_order(None, manifest),  # the manifest's router.protocols, else all
            )
            if old and old != backend.info.identity:
                self.log.warning(f"the router changed: {old} is now {backend.info.identity} at {backend.info.address}")
            self._backend = backend
            self.status.connected(backend.info.identity)
            self._watched = self._read_watch(backend)
            self._saw_boot(backend.info.identity, self._watched)
            self.log.bind(router=backend.info.address)
            self.metrics.set_info(self._revision, backend.info.identity)
            self.events.attach(backend)
        return self._backend

    def _publish(self, tracks: list[Track], backend: Backend, table: list[PortMapping], facts: Facts) -> None:
        """Write the router's snapshot, as the pass left it, where the config says (a hosted CI runner
        plans against it); a failure to write is logged and never fails the pass."""
        if not self.config.snapshot and self.publisher is None:
            return
        from .. import render, snapshot
        from ..boot import Booted

        now = self.wall()
        owned: set[MappingKey] = set()
        for track in tracks:
            if track.manifest is not None:
                owned |= set(diff.owned_rows(track.manifest, table, backend.learned, facts.store))
        doc = snapshot.document(
            backend,
            table,
            read_at=now,
            boot=Booted(None, now, backend.boot_id()).to_json(),
            owners={row.key: render.owner_label(row, owned) for row in table},
            pinhole_source=facts.pinholes.source if facts.pinholes else None,
        )
        self._unpublished = doc
        if not self.config.snapshot:
            return
        try:
            snapshot.write(self.config.snapshot, doc)
        except snapshot.SnapshotError as exc:
            self._log_once("SnapshotFailed", str(exc))

    def _publish_git(self) -> None:
        """Commit the pass's snapshot to its branch (publish.py); a failure is logged once per cause,
        retried at the next pass, and never fails this one."""
        doc, self._unpublished = self._unpublished, None
        if self.publisher is None or doc is None:
            return
        what = "publishing the snapshot"
        try:
            commit = self.publisher.publish(doc, self.wall())
        except publish.PublishFailed as exc:
            self._note(what, publish.REASON, str(exc))
            return
        except Exception as exc:
            self._note(what, st.INTERNAL_ERROR, f"{what} failed: {type(exc).__name__}: {exc}", traceback.format_exc())
            return
        self._note(what, "", "")
        if commit is not None:
            self.log.info(f"committed the snapshot to {self.publisher.describe()} as {commit[:12]}", commit=commit)

    def _drop_backend(self) -> None:
        self._backend = None
        self._watched = None
        self.events.forget()  # a router that went away has forgotten its subscribers

    def _set_inventory(
        self,
        track: Track,
        manifest: Manifest,
        plan: Plan,
        table: list[PortMapping],
        store: OwnershipStore,
        granted: dict[MappingKey, MappingKey] | None = None,
    ) -> None:
        """The manifest's owned rows from the table; what to renew from the plan's rows, each where the
        router holds it (`granted`: a next_free grant this pass kept at another port)."""
        now = self.wall()
        entries = []
        claims = diff.owned_rows(manifest, table, self._backend.learned if self._backend else None, store)
        for row in table:
            if row.key in claims:
                name = claims[row.key].name
                target = f"{row.internal_client}:{row.internal_port}"
                expires = now + row.lease if row.lease else None
                entries.append(st.InventoryEntry(name, str(row.key), target, expires))
        track.inventory = tuple(entries)
        track.declared = len(plan.desired) + len(plan.conflicts)
        track.conflicts = len(plan.conflicts)
        # A drifted row left as it is is not renewed either (that would write it): no wake-up for it.
        withheld = {c.key for c in plan.withheld}
        moved = granted or {}
        track.desired = {
            moved.get(m.key, m.key): replace(m, key=moved.get(m.key, m.key))
            for m in plan.desired
            if m.key not in withheld
        }
        track.leases = {row.key: row.lease for row in table if row.key in track.desired}
        track.read_at = self.clock()

    def _take_totals(self, table: list[PortMapping]) -> None:
        """Status and metrics of every manifest followed, from the table as the pass left it."""
        entries = tuple(e for t in self._tracks.values() for e in t.inventory)
        self.status.take_inventory(entries)
        owned = len(entries)
        self.metrics.mappings.labels("owned").set(owned)
        self.metrics.mappings.labels("declared").set(sum(t.declared for t in self._tracks.values()))
        self.metrics.mappings.labels("foreign").set(len(table) - owned)
        self.metrics.mappings.labels("conflict").set(sum(t.conflicts for t in self._tracks.values()))
        self.metrics.set_inventory(entries)
        if self._backend is not None:
            self.metrics.set_info(self._revision, self._backend.info.identity)

    def _take_sections(self) -> None:
        """Each followed manifest's section of the status, and its series in the metrics."""
        self.status.take_sections(tuple(t.section() for t in self._tracks.values()))
        for t in self._tracks.values():
            self.metrics.set_manifest(
                t.file,
                owned=len(t.inventory),
                declared=t.declared,
                conflict=t.conflicts,
                ready=t.ready == "True",
                drift=len(t.drift),
            )

    def _remember(self, track: Track, plan: Plan, report: ApplyReport | None) -> None:
        """The declared rows now converged: those the plan left alone or the pass wrote. A row whose
        change was withheld or failed keeps what was known of it (nothing, if it never converged)."""
        written = {r.change.key for r in report.results if r.ok} if report is not None else set()
        pending = {c.key for c in plan.changes} | {c.key for c in plan.withheld}
        moved = _granted(report) if report is not None else {}
        applied = {}
        for want in plan.desired:
            if want.key in moved:  # kept where the router granted it (next_free): remembered there
                applied[moved[want.key]] = replace(want, key=moved[want.key])
            elif want.key not in pending or want.key in written:
                applied[want.key] = want
            elif want.key in track.applied:
                applied[want.key] = track.applied[want.key]
        if applied != track.applied:
            track.applied = applied
            if track.recalled is not None and track.recalled[0]:
                self._said_of_memory(self.memory.keep(*track.recalled, applied))

    def _recall(self, track: Track, router: str, owner: str) -> None:
        """Take up what the drift memory holds of `track` on `router` when the track starts, or when
        its router or owner changed (what was seen converged elsewhere says nothing here). A router
        without an identity cannot be told from another: its track remembers in this process only."""
        where = (router, owner, track.file)
        if track.recalled == where:
            return
        track.recalled = where
        track.applied, problem = self.memory.recall(*where) if router else ({}, "")
        self._said_of_memory(problem)

    def _said_of_memory(self, problem: str) -> None:
        """Log a problem of the drift memory when it starts or changes; it never fails a pass."""
        if problem and problem != self._memory_problem:
            self.log.warning(
                f"{problem}; a changed row of a mapping not remembered is written, not taken for drift",
                reason="DriftMemory",
            )
        self._memory_problem = problem

    def _all_drift(self) -> tuple[str, ...]:
        return tuple(words for t in self._tracks.values() for words in t.drift.values())

    def _take_drift(self, track: Track, plan: Plan) -> None:
        """Report the drift of warn mappings the plan leaves unwritten: logged and counted when it
        starts or changes, gauged and in the Drifted condition while it lasts. Ignore mappings' drift is not said."""
        now = {c.key: _drift_words(c) for c in plan.withheld if c.drift is Drift.WARN}
        fresh = [words for key, words in now.items() if track.drift.get(key) != words]
        for words in fresh:
            self.log.warning(words, drift=Drift.WARN.value)
        self.metrics.drift_detected.inc(len(fresh))
        track.drift = now
        self._fresh_drift = self._fresh_drift or bool(fresh)
        drift = self._all_drift()
        self.metrics.drift_mappings.set(len(drift))
        if drift:
            self.status.set(st.DRIFTED, "True", st.DRIFT_DETECTED, "; ".join(drift))
        elif self.status.condition(st.DRIFTED) is not None:
            self.status.set(st.DRIFTED, "False", st.NO_DRIFT, "")

    def _longest_lease(self) -> int:
        """What a permanent lease lasts on this router (its backend says), to time renewals."""
        return self._backend.capabilities.longest_lease if self._backend is not None else MAX_LEASE

    def _next_wait(self) -> float:
        """The interval with jitter, or sooner when an owned lease (a mapping's or a pinhole's) needs renewing first."""
        wait = self.config.interval * (1 + self._random.uniform(-self.config.jitter, self.config.jitter))
        now = self.wall()
        for track in self._tracks.values():
            elapsed = self.clock() - track.read_at
            for key, want in track.desired.items():
                left = track.leases.get(key, 0)
                if left:
                    # Against what the router grants: a lease it shortens lasts only its longest one.
                    full = min(want.lease or self._longest_lease(), self._longest_lease())
                    wait = min(wait, renewal.agent_wakes_in(left - elapsed, full))
            for expires, lease in track.pinhole_leases:
                if expires > now:  # one that lapsed is opened again by the next pass, whenever it comes
                    wait = min(wait, renewal.agent_wakes_in(expires - now, lease))
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
            started,
            duration,
            outcome.result,
            self._revision,
            outcome.reason,
            outcome.message,
            outcome.changes,
            self._all_drift(),
        )
        self.status.record(result)
        fields: dict[str, Any] = {"duration": round(duration, 3), "next_run": round(outcome.wait, 1)}
        if outcome.result == "failed":
            self.metrics.errors.labels(outcome.reason).inc()
            key = f"{outcome.reason}: {outcome.message}"
            if key in self._errors_logged:
                # The same failure as before: every pass is on record, its error is not repeated.
                self.log.info(f"reconcile failed again ({outcome.reason})", reason=outcome.reason, **fields)
            else:
                self._errors_logged.add(key)
                self.log.error(
                    f"reconcile failed ({outcome.reason}): {outcome.message}", reason=outcome.reason, **fields
                )
        else:
            self.log.info(f"reconciled: {outcome.message}", **fields)
        newly_failed = outcome.result == "failed" and outcome.reason != self._last_reason
        fresh_drift, self._fresh_drift = self._fresh_drift, False
        if self.webhook and (outcome.changes or newly_failed or fresh_drift):
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
        if self._saw_boot(backend.info.identity, seen):
            # It forgot its event subscribers too: _drop_backend() has the subscription made again.
            self._drop_backend()
            return True
        if old is None:
            return False
        if seen.address != old.address:
            self.log.warning(
                f"the router's WAN address changed from {old.address or 'none'} to {seen.address or 'none'}"
            )
            return True
        return False

    def _saw_boot(self, router: str, seen: Sample) -> bool:
        """Take in the router's boot as just read; True (logged, counted) when it restarted since the last reading."""
        before = self._boot if self._boot_of == router else None
        why = restarted(before, seen.boot)
        self._boot, self._boot_of = seen.boot.after(before), router
        since = self.wall() - (self.clock() - self._boot.latest) if self._boot.latest is not None else None
        self.status.booted(since, self._boot.boot_id, self._boot.source)
        if not why:
            return False
        self._restart = why
        self.metrics.router_restarts.inc()
        self.status.restarted(why)
        self.log.warning(f"the router restarted ({why}); checking its table")
        return True

    def _read_watch(self, backend: Backend) -> Sample:
        sample = read_watch(backend, self.clock)
        # With the uptime unknown, restarts are noticed by the event subscription and the passes only.
        self._note("reading the router's uptime", st.ROUTER_ERROR, sample.problem)
        return sample

    def _shutdown(self) -> None:
        self.events.close()
        if self.config.release_on_exit:
            for track in self._tracks.values():
                if track.manifest is not None:
                    self._release(track.manifest)
        self.log.info("agent stopped")

    def _release(self, manifest: Manifest) -> None:
        try:
            backend = self._connect(manifest)
            # Like a pass: a portctl apply run by hand on the same router must not interleave with it.
            with lock.held(self.cache.lock_directory, backend.info.identity, LOCK_TIMEOUT):
                facts = api.read(backend, self.cache, manifest, timeout=self.config.timeout, clock=self.wall)
                plan = api.destroy_plan(manifest, facts)
                report = apply(plan, backend, store=facts.store, pinholes=facts.pinholes, clock=self.wall)
        except PortctlError as exc:
            self.log.error(f"could not release the owned mappings: {exc}")
            return
        for r in report.results:
            if r.ok:
                self.log.info(f"released {r.change.key} ({r.change.name})")
            else:
                self.log.error(f"could not release {r.change.key} ({r.change.name}): {r.error}")


def _publisher(config: AgentConfig) -> publish.GitPublisher | None:
    """The publisher of `snapshot: {git: ...}`, with a repository of its own beside the checkout."""
    target = config.snapshot_git
    url = publish.remote_url(target, config.repo) if target else None
    if target is None or url is None:
        return None
    return publish.GitPublisher(target, url, os.path.normpath(config.checkout_dir()) + "-snapshot.git")


def _load_manifest(artifact: Artifact, memo: Cache) -> Manifest:
    """The artifact's manifest: the bytes the source checked when it has them, else the file."""
    from .. import manifest

    if artifact.content is None:
        return manifest.load(artifact.path, memo)
    try:
        text = artifact.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(artifact.path, 0, 0, "", f"cannot read manifest: {exc}")]) from exc
    return manifest.parse(text, artifact.path, memo)


def _granted(report: ApplyReport) -> dict[MappingKey, MappingKey]:
    """Each planned key whose write the router granted at another port (next_free), to that port."""
    return {r.change.key: r.granted for r in report.results if r.ok and r.granted is not None}


def _pinhole_leases(manifest: Manifest, facts: PinholeFacts | None) -> tuple[tuple[float, int], ...]:
    """(expiry, lease) of each declared pinhole the inventory records now, after the pass's writes."""
    if facts is None:
        return ()
    declared = {d.key for d in api.desired_pinholes(manifest, facts)}
    return tuple((h.expires, h.lasts) for h in facts.store.held(manifest.owner) if h.key in declared)


def _without_conflicts(plan: Plan) -> Plan:
    """The plan minus its conflicting mappings (which have no changes): the rest can still be healed."""
    from dataclasses import replace

    return replace(plan, conflicts=())


def _pinhole_words(change: PinholeChange) -> str:
    k = change.key
    return f"{change.action.value} IPv6 pinhole {change.name}: [{k.internal_client}]:{k.internal_port}/{k.protocol}"


def _drift_words(change: Change) -> str:
    """A drifted row left as it is, in words."""
    m = change.before or change.after
    target = f"{m.internal_client}:{m.internal_port}" if m else "?"
    what = ", ".join(f"{f.field} {f.before} -> {f.after}" for f in change.fields) or change.reason
    return f"drift on {change.key} -> {target} ({change.name}): {what}; left as is (drift: warn)"


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
