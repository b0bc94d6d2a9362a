"""apply(plan, backend) -> ApplyReport: perform the plan's writes, then read back and verify each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from . import ownership, quirks
from .backends.base import Backend
from .errors import ConflictError, RouterError, RouterRefused, RouterUnreachable
from .models import Action, ApplyReport, Change, ChangeResult, MappingKey, Plan, PortMapping

Progress = Callable[[Change], None]


class _Taken(ConflictError):
    """The port was free when the plan was read and is not now."""


def apply(plan: Plan, backend: Backend, progress: Progress | None = None) -> ApplyReport:
    """Write every change, continuing past failed ones; a later apply finishes what failed.

    Nothing is written when the plan is blocked or has conflicts. The first write is an add, for
    another host if there is one: a router that refuses every write of that kind (secure mode,
    CGNAT) then refuses it before anything else has changed, and the apply stops there. After
    writing, the table is read back and a change counts as done only if the router now holds what
    it granted.
    """
    if plan.blocked:
        raise ConflictError(f"{plan.blocked}. Nothing was changed")
    if plan.conflicts:
        names = ", ".join(f"{c.name} ({c.key})" for c in plan.conflicts)
        raise ConflictError(f"the plan has conflicts, nothing was changed: {names}")
    if not plan.changes:
        return ApplyReport()
    errors: dict[Change, str] = {}
    granted: dict[Change, PortMapping] = {}
    stopped = ""

    def attempt(change: Change) -> None:
        nonlocal stopped
        if stopped:
            errors[change] = f"not attempted: {stopped}"
            return
        if progress:
            progress(change)
        try:
            got = _write(change, backend)
            if got is not None:
                granted[change] = got
        except RouterUnreachable as exc:
            stopped = errors[change] = str(exc)
        except RouterRefused as exc:
            errors[change] = str(exc)
            stopped = str(exc) if exc.stop else ""
        except (RouterError, _Taken) as exc:
            errors[change] = str(exc)

    first = _canary(plan.changes, _local(backend))
    order = [first, *(c for c in plan.changes if c is not first)] if first else list(plan.changes)
    for change in order:
        attempt(change)
    if stopped:
        # The router stopped answering (or restarted) part-way: check what it still holds, if it
        # answers now, so the report never calls done a write that a restart wiped.
        return _verified(plan, errors, granted, backend)
    table, unreadable = _read_back(backend)
    if table is None:
        # Every write was acknowledged, but the router went away before it could be read back.
        return _report(plan, errors, unverified=unreadable)
    retry = [c for c in plan.changes if c not in errors and _in_place(c) and not _holds(c, granted, table, backend)]
    for change in retry:
        # The router kept part of the old row on re-add (miniupnpd keeps descriptions): replace it.
        try:
            got = _write(replace(change, replace=True), backend)
            if got is not None:
                granted[change] = got
        except RouterError as exc:
            errors[change] = str(exc)
    return _verified(plan, errors, granted, backend, None if retry else table)


def _read_back(backend: Backend) -> tuple[dict[MappingKey, PortMapping] | None, str]:
    """The router's table by key, or None and why it could not be read."""
    try:
        return {m.key: m for m in backend.list_mappings()}, ""
    except RouterError as exc:
        return None, str(exc)


def _verified(
    plan: Plan,
    errors: dict[Change, str],
    granted: dict[Change, PortMapping],
    backend: Backend,
    table: dict[MappingKey, PortMapping] | None = None,
) -> ApplyReport:
    """The report, each change done only if the table (read now unless given) holds it; a table that
    cannot be read leaves the report unverified."""
    if table is None:
        table, unreadable = _read_back(backend)
        if table is None:
            return _report(plan, errors, unverified=unreadable)
    _verify(plan, errors, granted, table, backend)
    return _report(plan, errors, tuple(table.values()))


def _verify(
    plan: Plan,
    errors: dict[Change, str],
    granted: dict[Change, PortMapping],
    table: dict[MappingKey, PortMapping],
    backend: Backend,
) -> None:
    """A change counts as done only if the table read back holds it."""
    for change in plan.changes:
        if change not in errors and not _holds(change, granted, table, backend):
            errors[change] = _mismatch(granted.get(change, change.after), table.get(change.key))


def _report(
    plan: Plan, errors: dict[Change, str], table: tuple[PortMapping, ...] | None = None, *, unverified: str = ""
) -> ApplyReport:
    results = tuple(ChangeResult(c, c not in errors, errors.get(c, "")) for c in plan.changes)
    return ApplyReport(results, table, unverified)


def _canary(changes: tuple[Change, ...], local: str) -> Change | None:
    adds = [c for c in changes if c.action == Action.ADD and c.after is not None]
    others = [c for c in adds if c.after is not None and local and c.after.internal_client != local]
    return (others or adds)[0] if adds else None


def _local(backend: Backend) -> str:
    try:
        return backend.local_address()
    except RouterError:
        return ""


def _write(change: Change, backend: Backend) -> PortMapping | None:
    """Perform one change; returns the row the router granted, if the change adds one."""
    if change.action == Action.REMOVE or change.replace:
        assert change.before is not None
        backend.delete_mapping(change.before)
    if change.after is None:
        return None
    if change.action == Action.ADD:
        # AddPortMapping overwrites a row of the same client silently: make sure the port is
        # still free (or already ours, from an interrupted apply) before writing.
        row = backend.get_mapping(change.key)
        if row is not None and row.description != change.after.description:
            raise _Taken(
                f"{change.key} was taken by {row.internal_client}:{row.internal_port} {row.description!r} "
                "after the plan was read; it was left alone. Run plan again"
            )
    return backend.add_mapping(change.after, same_port_ok=change.same_port_ok)


def _in_place(change: Change) -> bool:
    return change.action in (Action.CHANGE, Action.RENEW) and not change.replace


def _holds(
    change: Change, granted: dict[Change, PortMapping], table: dict[MappingKey, PortMapping], backend: Backend
) -> bool:
    row = table.get(change.key)
    if change.after is None:
        # Gone, or the port now holds somebody else's mapping: either way ours is removed.
        return row is None or (change.before is not None and row.description != change.before.description)
    if row is None:
        return False
    want = granted.get(change, change.after)
    if change.action == Action.RENEW and change.before and row.lease and row.lease <= change.before.lease:
        return False
    same_description = row.description == want.description or quirks.observe_readback(
        want, row, backend.learned, ownership.MIN_KEPT
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
