"""apply(plan, backend) -> ApplyReport: perform the plan's writes, then read back and verify each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .backends.base import Backend
from .errors import ConflictError, RouterError, RouterUnreachable
from .models import Action, ApplyReport, Change, ChangeResult, MappingKey, Plan, PortMapping

Progress = Callable[[Change], None]


def apply(plan: Plan, backend: Backend, progress: Progress | None = None) -> ApplyReport:
    """Write every change, continuing past failed ones; a later apply finishes what failed.

    Nothing is written when the plan has conflicts. After writing, the table is read back and a
    change counts as done only if the router now holds what it asked for.
    """
    if plan.conflicts:
        names = ", ".join(f"{c.name} ({c.key})" for c in plan.conflicts)
        raise ConflictError(f"the plan has conflicts, nothing was changed: {names}")
    if not plan.changes:
        return ApplyReport()
    errors: dict[Change, str] = {}
    unreachable = ""
    for change in plan.changes:
        if unreachable:
            errors[change] = f"not attempted: {unreachable}"
            continue
        if progress:
            progress(change)
        try:
            _write(change, backend)
        except RouterUnreachable as exc:
            unreachable = str(exc)
            errors[change] = unreachable
        except RouterError as exc:
            errors[change] = str(exc)
    if unreachable:
        return ApplyReport(tuple(ChangeResult(c, c not in errors, errors.get(c, "")) for c in plan.changes))

    table = {m.key: m for m in backend.list_mappings()}
    retry = [c for c in plan.changes if c not in errors and _in_place(c) and not _holds(c, table)]
    for change in retry:
        # The router kept part of the old row on re-add (miniupnpd keeps descriptions): replace it.
        try:
            _write(replace(change, replace=True), backend)
        except RouterError as exc:
            errors[change] = str(exc)
    if retry:
        table = {m.key: m for m in backend.list_mappings()}
    results = []
    for change in plan.changes:
        if change not in errors and not _holds(change, table):
            errors[change] = _mismatch(change, table.get(change.key))
        results.append(ChangeResult(change, change not in errors, errors.get(change, "")))
    return ApplyReport(tuple(results))


def _write(change: Change, backend: Backend) -> None:
    if change.action == Action.REMOVE or change.replace:
        assert change.before is not None
        backend.delete_mapping(change.key, change.before.remote_host)
    if change.after is not None:
        backend.add_mapping(change.after)


def _in_place(change: Change) -> bool:
    return change.action in (Action.CHANGE, Action.RENEW) and not change.replace


def _holds(change: Change, table: dict[MappingKey, PortMapping]) -> bool:
    row = table.get(change.key)
    if change.after is None:
        # Gone, or the port now holds somebody else's mapping: either way ours is removed.
        return row is None or (change.before is not None and row.description != change.before.description)
    if row is None:
        return False
    want = change.after
    if change.action == Action.RENEW and change.before and row.lease and row.lease <= change.before.lease:
        return False
    return (
        row.internal_client == want.internal_client
        and row.internal_port == want.internal_port
        and row.description == want.description
        and (not row.remote_host or row.remote_host == want.remote_host)
    )


def _mismatch(change: Change, row: PortMapping | None) -> str:
    if change.after is None:
        return "the router still lists the mapping after DeletePortMapping succeeded"
    if row is None:
        return "the router accepted the mapping but does not list it"
    return (
        "the router lists "
        f"{row.internal_client}:{row.internal_port} {row.description!r} instead of "
        f"{change.after.internal_client}:{change.after.internal_port} {change.after.description!r}"
    )
