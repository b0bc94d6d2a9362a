"""apply(plan, backend) -> ApplyReport: perform the plan's writes, then read back and verify each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import ownership, quirks
from .backends.base import Backend
from .errors import (
    ConflictError,
    RouterError,
    RouterProtocolError,
    RouterRefused,
    RouterTimeout,
    RouterUnreachable,
    UpnpActionError,
)
from .models import Action, ApplyReport, Change, ChangeResult, MappingKey, Plan, PortMapping
from .ownerstore import OwnershipStore

if TYPE_CHECKING:
    from .pinholeaccess import PinholeFacts

Progress = Callable[[Change], None]


class _Skipped(ConflictError):
    """The row a write would touch is no longer the one the plan saw, so the write was not made."""


def apply(
    plan: Plan,
    backend: Backend,
    progress: Progress | None = None,
    *,
    clock: Callable[[], float] = time.time,
    store: OwnershipStore | None = None,
    pinholes: PinholeFacts | None = None,
) -> ApplyReport:
    """Write every change exactly as planned, continuing past failed ones, and tell `store` (the
    ownership store the plan was made with, when it keeps records) what is now held and released.

    Nothing is written when the plan is blocked or has conflicts. The first write is an add, for
    another host if there is one: a router that refuses every write of that kind (secure mode)
    then refuses it before anything else has changed, and the apply stops there. A router that
    first shows a need (a permanent lease...) refuses that one mapping: it is reported with the
    cause and remedy, the backend learned the need, and the next plan shows it. One request that is
    not answered in time stops the rest only if the router then does not answer at all: a busy router
    that is slow once still gets every other change tried. After writing, the table is read back and
    a change counts as done only if the router now holds what was planned (a timed-out write too).
    The plan's pinholes are written after its mappings, through `pinholes` (the facts they were
    planned from), and recorded in its inventory.
    """
    report = _apply(plan, backend, progress, clock)
    if store is not None:
        _keep_records(plan, report, store)
    if plan.pinholes:
        if pinholes is None:
            raise ConflictError("the plan has pinholes but no pinhole service was read; nothing more was changed")
        from . import pinholeaccess

        report = replace(report, pinholes=pinholeaccess.write(plan, pinholes, clock))
    return report


def _apply(plan: Plan, backend: Backend, progress: Progress | None, clock: Callable[[], float]) -> ApplyReport:
    if plan.blocked:
        raise ConflictError(f"{plan.blocked}. Nothing was changed")
    if plan.conflicts:
        names = ", ".join(f"{c.name} ({c.key})" for c in plan.conflicts)
        raise ConflictError(f"the plan has conflicts, nothing was changed: {names}")
    if not plan.changes:
        return ApplyReport()
    errors: dict[Change, str] = {}
    granted: dict[Change, MappingKey] = {}  # where a router that picks the port put it, in the change's window
    skipped: set[Change] = set()
    final: set[Change] = set()  # refused in a way a rerun repeats
    uncertain: set[Change] = set()  # timed out: the router may have made the change all the same
    stopped = ""
    stopped_for_good = False  # by a refusal every write repeats (secure mode, 727): a rerun cannot help

    def attempt(change: Change) -> None:
        nonlocal stopped, stopped_for_good
        if stopped:
            errors[change] = f"not attempted: {stopped}"
            if stopped_for_good:
                final.add(change)
            return
        if progress:
            progress(change)
        try:
            at = _write(change, backend)
            if at is not None and at != change.key:
                granted[change] = at
        except RouterTimeout as exc:
            errors[change] = str(exc)
            uncertain.add(change)
            if not _answers(backend):
                stopped = f"{exc}; the router no longer answers"
        except RouterUnreachable as exc:
            stopped = errors[change] = str(exc)
        except RouterRefused as exc:
            errors[change], helps = _refused(change, exc)
            if not helps:
                final.add(change)
            stopped, stopped_for_good = (str(exc), True) if exc.stop else ("", False)
        except _Skipped as exc:
            errors[change] = str(exc)
            skipped.add(change)
        except RouterError as exc:
            errors[change] = str(exc)

    first = _canary(plan.changes, backend.local_or_unknown())
    order = [first, *(c for c in plan.changes if c is not first)] if first else list(plan.changes)
    for change in order:
        attempt(change)
    outcome = _Outcome(errors, skipped, final, clock, uncertain, granted)
    if stopped:
        # The router stopped answering (or restarted) part-way: check what it still holds, if it
        # answers now, so the report never calls done a write that a restart wiped.
        return _verified(plan, outcome, backend)
    table, unreadable = _read_back(backend, {outcome.held(c).key for c in plan.changes})
    if table is None:
        # Every write was acknowledged, but the router went away before it could be read back.
        return _report(plan, outcome, unverified=unreadable)
    retry = [c for c in plan.changes if c not in errors and _in_place(c) and not _holds(c, table, backend, clock)]
    for change in retry:
        # The router kept part of the old row on re-add (miniupnpd keeps descriptions): replace the
        # row just read back, if it is still there unchanged.
        try:
            _write(replace(change, replace=True), backend, table.get(change.key))
        except _Skipped as exc:
            errors[change] = str(exc)
            skipped.add(change)
        except RouterRefused as exc:
            errors[change], helps = _refused(change, exc)
            if not helps:
                final.add(change)
        except RouterError as exc:
            errors[change] = str(exc)
    return _verified(plan, outcome, backend, None if retry else table)


def _keep_records(plan: Plan, report: ApplyReport, store: OwnershipStore) -> None:
    """Record each row written and release each one removed. A write the router acknowledged but
    that could not be read back is recorded too: an unrecorded row of ours would look foreign forever,
    while a record of a row that is not there claims nothing (a claim needs the row)."""
    for result in report.results:
        c = result.change
        if not result.ok:
            continue
        if c.after is None:
            store.release(plan.owner, c.key)
        elif result.granted is not None:
            # Kept where the router granted it, inside the approved window; a row it replaced is gone.
            if c.before is not None:
                store.release(plan.owner, c.key)
            store.record(plan.owner, result.granted, _at(c.after, result.granted), c.name, protect=c.protect)
        else:
            store.record(plan.owner, c.key, c.after, c.name, protect=c.protect)
    # Records of rows that were gone when the plan read the table, and that this apply did not write
    # again, claim nothing: they go, so the inventory holds what the router holds.
    written = {r.granted or r.change.key for r in report.results if r.ok and r.change.after is not None}
    store.forget_absent(plan.owner, {m.key for m in plan.table} | written)


@dataclass(frozen=True)
class _Outcome:
    errors: dict[Change, str]
    skipped: set[Change]
    final: set[Change]
    clock: Callable[[], float]
    uncertain: set[Change]
    granted: dict[Change, MappingKey]

    def held(self, change: Change) -> Change:
        """`change` as the router holds it: at the port it granted, where that is another."""
        at = self.granted.get(change)
        if at is None or change.after is None:
            return change
        return replace(change, key=at, after=_at(change.after, at))


def _answers(backend: Backend) -> bool:
    """Does the router answer a cheap request now? A fault is an answer; no answer in time is not."""
    try:
        backend.external_address()
    except RouterUnreachable:
        return False
    except RouterError:
        pass
    return True


def _refused(change: Change, exc: RouterRefused) -> tuple[str, bool]:
    """The report's words for a refused write, and whether running apply again can help."""
    if not exc.need or change.after is None:
        # A refusal of this one mapping repeats; one that stopped the apply (secure mode) too.
        return str(exc), False
    text, helps = quirks.first_need(quirks.Quirk(exc.need), change.after, change.allowed, exc.proven)
    return f"{UpnpActionError(exc.action, exc.code)}: {text}", helps


def _read_back(backend: Backend, keys: set[MappingKey]) -> tuple[dict[MappingKey, PortMapping] | None, str]:
    """The router's table by key (only the rows at `keys` on a router that cannot list its table),
    or None and why it could not be read."""
    try:
        if backend.capabilities.can_list:
            return {m.key: m for m in backend.list_mappings()}, ""
        return {k: row for k in sorted(keys) if (row := backend.get_mapping(k)) is not None}, ""
    except RouterError as exc:
        return None, str(exc)


def _verified(
    plan: Plan, outcome: _Outcome, backend: Backend, table: dict[MappingKey, PortMapping] | None = None
) -> ApplyReport:
    """The report, each change done only if the table (read now unless given) holds it; a table that
    cannot be read leaves the report unverified."""
    if table is None:
        table, unreadable = _read_back(backend, {outcome.held(c).key for c in plan.changes})
        if table is None:
            return _report(plan, outcome, unverified=unreadable)
    for change in outcome.uncertain:
        if _holds(change, table, backend, outcome.clock):
            del outcome.errors[change]  # the write that timed out was made all the same
    for change in plan.changes:
        held = outcome.held(change)
        if change not in outcome.errors and not _holds(held, table, backend, outcome.clock):
            outcome.errors[change] = _mismatch(held.after, table.get(held.key))
        elif change not in outcome.errors:
            _proved(change, backend, outcome.clock())
    return _report(plan, outcome, tuple(table.values()))


def _proved(change: Change, backend: Backend, now: float) -> None:
    """A row planned on a suspicion (a 402 that may have meant the lease) was accepted: the same
    request but for that one field was refused, so the suspicion is proven."""
    suspected = [a for a in change.adapted if not a.proven]
    if len(suspected) == 1 and len(change.adapted) == 1:
        a = suspected[0]
        quirk = quirks.Quirk(a.need)
        lesson = backend.learned.quirks.get(quirk)
        evidence = lesson.evidence if lesson else a.need
        backend.learned.learn(quirk, f"{evidence}; accepted with {a.field} {a.written!r}", now=now, proven=True)


def _report(
    plan: Plan, outcome: _Outcome, table: tuple[PortMapping, ...] | None = None, *, unverified: str = ""
) -> ApplyReport:
    errors = outcome.errors
    results = tuple(
        ChangeResult(
            c, c not in errors, errors.get(c, ""), c in outcome.skipped, c in outcome.final, outcome.granted.get(c)
        )
        for c in plan.changes
    )
    return ApplyReport(results, table, unverified)


def _canary(changes: tuple[Change, ...], local: str | None) -> Change | None:
    """The add to write first: one for another host if any. With this host's address unknown no
    add is known to be for another host; the fallback table then refuses each one alone."""
    adds = [c for c in changes if c.action == Action.ADD and c.after is not None]
    others = [c for c in adds if c.after is not None and local is not None and c.after.internal_client != local]
    return (others or adds)[0] if adds else None


def _write(change: Change, backend: Backend, seen: PortMapping | None = None) -> MappingKey | None:
    """Perform one change, writing exactly the row the plan shows; where the router put it instead,
    inside the change's window (next_free on a router that picks the port), if anywhere.

    The table may have moved since the plan read it (another app, another host), and neither
    DeletePortMapping nor AddPortMapping asks whose row it hits: each write first reads the one row
    it touches and is skipped unless that row is still `seen` (the plan's `before`), or the port
    still free for an add. A row already gone needs no delete; its port is free for the add.
    """
    seen = seen or change.before
    describes = backend.capabilities.can_describe
    row = backend.get_mapping(change.key)
    if row is not None and change.action is not Action.ADD:
        assert seen is not None
        if not _same_row(row, seen, describes):
            raise _Skipped(
                f"moved: the row is no longer the one the plan saw (it saw {_row_text(seen)}, the router "
                f"now holds {_row_text(row)}); it was left alone. Run plan again"
            )
        if change.action is Action.REMOVE or change.replace:
            backend.delete_mapping(seen)
            # Between this delete and the add below another app can take the port: read it again.
            row = backend.get_mapping(change.key) if change.after is not None else None
        else:
            row = None  # ours and as planned: AddPortMapping updates it in place
    if change.after is None:
        return None
    if row is not None and not _same_row(row, change.after, describes):
        # A row with our very description is ours, left by an interrupted apply: re-adding is safe.
        # (Where the router keeps no descriptions, one forwarding to our very target is.)
        raise _Skipped(
            f"taken: another mapping now holds the port ({_row_text(row)} took it after the plan "
            "was read); it was left alone. Run plan again"
        )
    at = backend.add_mapping(change.after, change.window)
    if at is None or at == change.key:
        return None
    if at.protocol != change.key.protocol or change.window is None or at.external_port not in change.window:
        # A backend keeps a moved grant only inside the window it was given: anything else is its bug.
        raise RouterProtocolError(f"{change.key} was written at {at}, outside what the plan approved")
    return at


def _at(row: PortMapping, key: MappingKey) -> PortMapping:
    return replace(row, key=key)


def _same_row(row: PortMapping, seen: PortMapping, describes: bool) -> bool:
    """Is `row` (read just now) the row `seen`? Lease time counts down and is not compared;
    miniupnpd pads descriptions past 63 bytes with garbage that can differ between two reads, and
    drops trailing whitespace. A router that keeps no descriptions shows its own text: not compared."""
    cut = ownership.MAX_DESCRIPTION_BYTES
    return (
        row.internal_client == seen.internal_client
        and row.internal_port == seen.internal_port
        and (not describes or quirks.same_description(row.description[:cut], seen.description[:cut]))
    )


def _row_text(row: PortMapping) -> str:
    return f"{row.internal_client}:{row.internal_port} {row.description!r}"


def _in_place(change: Change) -> bool:
    return change.action in (Action.CHANGE, Action.RENEW) and not change.replace


def _holds(change: Change, table: dict[MappingKey, PortMapping], backend: Backend, clock: Callable[[], float]) -> bool:
    row = table.get(change.key)
    describes = backend.capabilities.can_describe
    if change.after is None:
        # Gone, or the port now holds somebody else's mapping: either way ours is removed. Where the
        # router keeps descriptions, a row still carrying ours is ours, wherever it points now.
        if row is None or change.before is None:
            return row is None
        if describes:
            return not quirks.same_description(row.description, change.before.description)
        return not _same_row(row, change.before, describes)
    if row is None:
        return False
    want = change.after
    if change.action == Action.RENEW and change.before and row.lease and row.lease <= change.before.lease:
        return False
    same_description = (
        not describes
        or row.description == want.description
        or quirks.observe_readback(want, row, backend.learned, ownership.MIN_KEPT, clock())
    )
    return (
        row.internal_client == want.internal_client
        and row.internal_port == want.internal_port
        and same_description
        and (not row.remote_host or row.remote_host == want.remote_host)
    )


def _mismatch(want: PortMapping | None, row: PortMapping | None) -> str:
    if want is None:
        return "the router still lists the mapping after DeletePortMapping succeeded"
    if row is None:
        return "the router accepted the mapping but does not list it"
    return (
        "the router lists "
        f"{row.internal_client}:{row.internal_port} {row.description!r} instead of "
        f"{want.internal_client}:{want.internal_port} {want.description!r}"
    )
