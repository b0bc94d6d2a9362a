"""diff(manifest, table) -> Plan. Pure: no I/O, no clock; the only importer of deepdiff.

Ownership is asked of an OwnershipStore (ownerstore.py): by default the description tag
(ownership.py), where a row carrying this owner's tag for its own key is owned; a protocol that
cannot describe hands in its inventory instead. Every row not claimed is foreign and is never
changed unless a mapping says takeover.
An owned row carrying the legacy tag is re-tagged (replaced); an owned row that points at another
host than this one is flagged when it would be removed: another installation may share the owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import madethrough, nextfree, ownership, quirks, renewal
from .durations import format_duration
from .models import (
    MAX_LEASE,
    Action,
    Change,
    Conflict,
    DesiredMapping,
    Drift,
    FieldChange,
    Manifest,
    MappingKey,
    OnConflict,
    Plan,
    PortMapping,
    RouterInfo,
)
from .ownerstore import OwnershipStore, TagStore

NEXT_FREE_WINDOW = nextfree.NEXT_FREE_WINDOW
# Fields a router can change in place by re-adding the mapping; the others need delete then add.
_IN_PLACE = {"internal_port", "enabled", "remote_host"}
# A foreign row is re-tagged as this owner's by deleting it and adding it again: say so before approval.
TAKEOVER_NOTE = "taken over by delete then add: the port closes for a moment between the two"
_COMPARED = ("internal_client", "internal_port", "description", "enabled", "remote_host")


def target(
    owner: str, d: DesiredMapping, key: MappingKey | None = None, store: OwnershipStore | None = None
) -> PortMapping:
    """The router row that realises `d` (at `key` when next_free moved it), labelled as `store` labels."""
    key = key or d.key
    store = store or TagStore()
    return PortMapping(
        key=key,
        internal_client=d.internal_client,
        internal_port=d.internal_port,
        description=store.label(owner, key, d.name, d.description, protect=d.protect),
        lease=d.lease,
        remote_host=d.remote_host,
    )


def diff(
    manifest: Manifest,
    table: list[PortMapping],
    router: RouterInfo | None = None,
    learned: quirks.Learned | None = None,
    local: str | None = None,
    renew_below: float = renewal.PLAN_BELOW,
    claims: dict[MappingKey, ownership.Claim] | None = None,
    store: OwnershipStore | None = None,
    longest_lease: int = MAX_LEASE,
    describes: bool = True,
    finite_leases: bool = False,
    picks_port: bool = False,
    keeps_moved: bool = True,
    applied: Mapping[MappingKey, PortMapping] | None = None,
    withhold: bool = False,
) -> Plan:
    """The plan that makes `table` hold what `manifest` declares, on a router that needs `learned`.

    `local` is this host's address towards the router (None if unknown); it matters on routers in
    secure mode, and names the host in a removal of a mapping that points elsewhere.
    A lease is renewed once less than `renew_below` of it is left. `claims` overrides which rows
    are owned (destroy reads them with the whole manifest, then plans as if it declared nothing);
    otherwise `store` (the description tag by default) says which are.
    `longest_lease` is what the router makes of a permanent lease, and `describes` whether its rows
    keep the description sent (its backend's capabilities say); where they do not, the router's own
    text in a row is not drift. `finite_leases`: the protocol has no permanent lease, so a permanent
    one is refused unless the mapping accepts `longest_lease` (allow_permanent). `picks_port`: the
    router picks the external port (PCP, NAT-PMP), so a next_free mapping's add or replace carries the
    window of ports it may be granted instead (nextfree.py), where it `keeps_moved` grants (the
    backend's keeps_moved_grants: not NAT-PMP, whose moved grant may be another's mapping).

    Drift: a change that makes an owned row match the manifest again although the manifest's wish for
    it is what was applied before (`applied`: the rows last seen converged, per key; the agent's memory)
    is marked with its mapping's drift mode. Changed or missing, an owned row is drift only where
    `applied` shows it was held as wanted now: a row `applied` shows under an older wish is an
    approved edit, and one it does not hold at all was never seen converged (a first add, or the
    agent's first pass with no memory of it), so it is written. With no `applied` at all (a plan by
    hand) every changed owned row is marked as drift and a missing one never is.
    `ignore_drift` fields are not compared where the change would be drift, and renewals are never drift.
    With `withhold`, drift of warn and ignore mappings goes to `Plan.withheld` instead of the changes.
    """
    learned = learned or quirks.Learned()
    owner = manifest.owner
    rows = {m.key: m for m in table}
    store = store or TagStore()
    claims = owned_rows(manifest, table, learned, store) if claims is None else claims
    owned = {key: c.name for key, c in claims.items()}

    placed, conflicts = _place(manifest, rows, owned)
    changes: list[Change] = []
    withheld: list[Change] = []
    desired: list[PortMapping] = []
    taken_over: set[MappingKey] = set()
    for key, d in placed.items():
        allowed = opt_ins(d)
        request = quirks.Request(
            local=local,
            longest_lease=longest_lease,
            same_port_ok=d.allow_same_port,
            permanent_ok=d.allow_permanent,
            any_remote_ok=d.allow_any_remote_host,
            finite_leases=finite_leases,
        )
        shaped = quirks.shape(target(owner, d, key, store), learned, request)
        if isinstance(shaped, str):
            conflicts.append(Conflict(d.name, key, None, shaped))
            continue
        (want, adapted), have = shaped, rows.get(key)
        desired.append(want)
        taken = _taken(d, rows)  # an app on d's host took its port over through PCP or NAT-PMP
        held = taken or f"{d.key.external_port} is taken"
        moved = f"{held}; using {key.external_port} (next_free)" if key != d.key else ""
        prior = applied.get(key) if applied is not None else None
        if have is None:
            drifted = prior == want  # a first add, or a re-add after an edit, is no drift
        elif applied is None:
            drifted = True  # no memory at all (a plan by hand): shown as drift, a hand apply writes it anyway
        else:
            # The agent's memory: a row it never saw converged (first run, memory lost) cannot have
            # drifted from what it applied, and is written; withholding it could keep an approved
            # edit off the router for good, where writing it heals real drift once at worst.
            drifted = prior == want
        change: Change | None
        if have is None:
            change = Change(Action.ADD, d.name, key, None, want, moved or "declared", same_port_ok=d.allow_same_port)
            if drifted:
                change = replace(change, reason="gone from the router", drift=d.drift)
        elif key not in owned:
            taken_over.add(key)
            change = Change(
                Action.CHANGE,
                d.name,
                key,
                have,
                want,
                f"takeover: {taken}" if taken else f"takeover of foreign mapping {have.description!r}",
                replace=True,
                same_port_ok=d.allow_same_port,
                note=TAKEOVER_NOTE,
            )
        else:
            ignored = d.ignore_drift if drifted else frozenset()
            change = _update(d, have, want, renew_below, longest_lease, describes, ignored)
            if change is not None and drifted and change.action is Action.CHANGE:
                change = replace(change, drift=d.drift)  # a re-tag below is portctl's own, not drift
            if change is not None and claims[key].legacy:
                why = f"re-tag: {have.description!r} carries the legacy 8-character tag"
                change = replace(change, reason=why, drift=None)
            elif change is not None and claims[key].through:
                said = f"made through {claims[key].through} by this owner ({have.description!r}): re-made with its tag"
                change = replace(change, reason=f"re-tag: {said}", drift=None)
        if change is not None:
            change = replace(change, adapted=adapted, allowed=allowed, protect=d.protect)
            if picks_port and (change.action is Action.ADD or change.replace):
                change = _windowed(change, d, manifest, keeps_moved)
            if withhold and change.drift in (Drift.WARN, Drift.IGNORE):
                withheld.append(change)
            else:
                changes.append(change)

    kept, protected = [], []
    for key, name in sorted(owned.items()):
        if key in placed:
            continue
        row = rows[key]
        if claims[key].protected:  # as the store claimed it: the tag's mark, or an inventory's record
            kept.append(row)
            protected.append(key)
        elif manifest.prune:
            # A row this installation recorded or made with its own PCP secret is not another's, even
            # where it leads to another host (PCP THIRD_PARTY).
            note = "" if claims[key].here or claims[key].through else _elsewhere(row, local)
            changes.append(Change(Action.REMOVE, name or str(key), key, row, None, "no longer declared", note=note))
        else:
            kept.append(row)
    foreign = tuple(m for k, m in sorted(rows.items()) if k not in owned and k not in taken_over)
    writes = any(c.after is not None for c in changes)
    blocked = quirks.wan_blocker(router.external_ip, allow_private=manifest.allow_private_wan) if router else ""
    return Plan(
        owner=owner,
        changes=tuple(sorted(changes, key=_order)),
        foreign=foreign,
        conflicts=tuple(conflicts),
        kept=tuple(kept),
        protected=tuple(protected),
        router=router,
        table=tuple(m for _, m in sorted(rows.items())),
        blocked=blocked if writes else "",
        quirks=tuple(_need_text(q, lesson) for q, lesson in sorted(learned.quirks.items())),
        desired=tuple(sorted(desired, key=lambda m: m.key)),
        withheld=tuple(sorted(withheld, key=_order)),
    )


def _windowed(change: Change, d: DesiredMapping, manifest: Manifest, keeps_moved: bool) -> Change:
    """`change` with the window of ports the router may grant instead, or the note why there is none."""
    if not keeps_moved:
        return replace(change, note=nextfree.UNTOLD) if d.on_conflict == OnConflict.NEXT_FREE else change
    group = sum(1 for m in manifest.mappings if m.name == d.name)
    others = {m.key for m in manifest.mappings if m.name != d.name}
    window, why = nextfree.window(d, group, manifest.policy, others)
    return replace(change, window=window, note=why or change.note)


def opt_ins(d: DesiredMapping) -> tuple[str, ...]:
    """The widening opt-ins the manifest gives `d`, by name."""
    given = {
        "allow_same_port": d.allow_same_port,
        "allow_permanent": d.allow_permanent,
        "allow_any_remote_host": d.allow_any_remote_host,
    }
    return tuple(name for name, on in given.items() if on)


def _need_text(quirk: quirks.Quirk, lesson: quirks.Lesson) -> str:
    text = f"{quirks.MEANING[quirk]} [{quirk}]"
    return text if lesson.proven else f"{text} (suspected from {lesson.evidence[:80]}; never blocks a mapping)"


def owned_rows(
    manifest: Manifest,
    table: list[PortMapping],
    learned: quirks.Learned | None = None,
    store: OwnershipStore | None = None,
) -> dict[MappingKey, ownership.Claim]:
    """The rows of `table` that `manifest`'s owner holds, as `store` (the description tag by default) says."""
    at = _names_at(manifest)
    cut = learned.description_limit if learned else 0
    store = store or TagStore()
    claims = {}
    for row in table:
        found = store.claim(manifest.owner, row.key, row, at.get(row.key, ()), cut)
        if found is not None:
            claims[row.key] = found
    return claims


def _names_at(manifest: Manifest) -> dict[MappingKey, set[str]]:
    """The names the manifest may place at each key: its own, or within a next_free window."""
    at: dict[MappingKey, set[str]] = {}
    for d in manifest.mappings:
        shifts = range(NEXT_FREE_WINDOW + 1) if d.on_conflict == OnConflict.NEXT_FREE else range(1)
        for shift in shifts:
            at.setdefault(MappingKey(d.key.external_port + shift, d.key.protocol), set()).add(d.name)
    return at


def _elsewhere(row: PortMapping, local: str | None) -> str:
    if not local or row.internal_client in ("", local):
        return ""
    return f"points at {row.internal_client}, not this host ({local}): another installation with the same owner?"


def _order(c: Change) -> tuple[int, MappingKey]:
    # Removals free ports first; additions come last so they can use them.
    return ({Action.REMOVE: 0, Action.CHANGE: 1, Action.RENEW: 2, Action.ADD: 3}[c.action], c.key)


def _place(
    manifest: Manifest, rows: dict[MappingKey, PortMapping], owned: dict[MappingKey, str]
) -> tuple[dict[MappingKey, DesiredMapping], list[Conflict]]:
    """Where each declared mapping goes. next_free groups move together (all ports, both protocols)."""
    groups: dict[str, list[DesiredMapping]] = {}
    for d in manifest.mappings:
        groups.setdefault(d.name, []).append(d)
    # Fixed mappings claim their ports before next_free ones look for room.
    ordered = sorted(groups.values(), key=lambda g: g[0].on_conflict == OnConflict.NEXT_FREE)
    declared = set(groups)
    placed: dict[MappingKey, DesiredMapping] = {}
    conflicts: list[Conflict] = []
    for group in ordered:
        policy, name, first = group[0].on_conflict, group[0].name, group[0].key
        shifts = [0]
        if policy == OnConflict.NEXT_FREE:
            # Stay where an earlier apply put the group, before looking for the lowest free shift.
            current = [
                s
                for s in range(1, NEXT_FREE_WINDOW + 1)
                if owned.get(MappingKey(first.external_port + s, first.protocol)) == name
            ]
            shifts = current[:1] + list(range(NEXT_FREE_WINDOW + 1))
        chosen = next((s for s in shifts if _blocker(group, s, placed, rows, owned, declared) is None), None)
        if chosen is None:
            key = _blocker(group, 0, placed, rows, owned, declared) or first
            holder = rows.get(key) or PortMapping(key, "", 0, "declared twice")
            at = next((d for d in group if d.key == key), None)
            reason = (_taken(at, rows) if at else "") or "held by a foreign mapping"
            if policy == OnConflict.NEXT_FREE:
                reason += f"; no free port within {NEXT_FREE_WINDOW} above it"
            conflicts.append(Conflict(name, key, holder, reason))
            continue
        for d in group:
            placed[MappingKey(d.key.external_port + chosen, d.key.protocol)] = d
    return placed, conflicts


def _taken(d: DesiredMapping, rows: dict[MappingKey, PortMapping]) -> str:
    """Why `d`'s own port is held, if an app on its host took it over through PCP or NAT-PMP; else ""."""
    row = rows.get(d.key)
    return madethrough.taken_over(row, d.internal_client, d.internal_port) if row is not None else ""


def _blocker(
    group: list[DesiredMapping],
    shift: int,
    placed: dict[MappingKey, DesiredMapping],
    rows: dict[MappingKey, PortMapping],
    owned: dict[MappingKey, str],
    declared: set[str],
) -> MappingKey | None:
    """The first key that stops `group` from moving by `shift`, or None if every key is free for it."""
    name, policy = group[0].name, group[0].on_conflict
    for d in group:
        key = MappingKey(d.key.external_port + shift, d.key.protocol)
        if key.external_port > 65535 or key in placed:
            return key
        if key in rows and key not in owned and policy != OnConflict.TAKEOVER:
            return key
        if owned.get(key, "") not in ("", name) and owned[key] in declared:
            return key  # ours, but another declared mapping's
    return None


def _update(
    d: DesiredMapping,
    have: PortMapping,
    want: PortMapping,
    renew_below: float,
    longest_lease: int,
    describes: bool,
    ignored: frozenset[str] = frozenset(),
) -> Change | None:
    """`want.lease` is what the router can hold (quirks applied), which may differ from the manifest's.
    `ignored` fields (ignore_drift) are not compared; a lease running out is renewed all the same."""
    same_port = d.allow_same_port
    fields = _field_changes(have, want, describes and "description" not in ignored)
    if fields:
        in_place = all(f.field in _IN_PLACE for f in fields)
        return Change(
            Action.CHANGE, d.name, want.key, have, want, "differs from the manifest", fields, not in_place, same_port
        )
    if want.lease and (have.lease == 0 or have.lease > want.lease) and "lease" not in ignored:
        lease = FieldChange("lease", _lease_text(have.lease), _lease_text(want.lease))
        return Change(
            Action.CHANGE, d.name, want.key, have, want, "lease differs from the manifest", (lease,), False, same_port
        )
    # A router grants at most its longest lease: renewal is timed against what it can hold.
    effective = min(want.lease or longest_lease, longest_lease)
    if have.lease and have.lease < effective * renew_below:
        reason = f"lease has {format_duration(have.lease)} left of {format_duration(effective)}"
        return Change(Action.RENEW, d.name, want.key, have, want, reason, same_port_ok=same_port)
    return None


def _field_changes(have: PortMapping, want: PortMapping, describes: bool = True) -> tuple[FieldChange, ...]:
    before = _comparable(have, want, describes)
    after = {f: getattr(want, f) for f in _COMPARED}  # scalars all: asdict would deep-copy the row for nothing
    if before == after:
        return ()  # the usual case; deepdiff's import alone costs more than a whole no-op plan
    from deepdiff import DeepDiff

    delta: dict[str, Any] = DeepDiff(before, after)
    out = []
    for kind in ("values_changed", "type_changes"):
        for path, change in delta.get(kind, {}).items():
            field = path.split("'")[1]
            out.append(FieldChange(field, change["old_value"], change["new_value"]))
    return tuple(sorted(out, key=lambda f: _COMPARED.index(f.field)))


def _comparable(have: PortMapping, want: PortMapping, describes: bool) -> dict[str, object]:
    row = {f: getattr(have, f) for f in _COMPARED}
    if not have.remote_host:
        # Many routers (miniupnpd among them) accept a remote host but list it back empty:
        # that is not drift.
        row["remote_host"] = want.remote_host
    if not describes or quirks.same_description(have.description, want.description):
        row["description"] = want.description  # trailing whitespace the router dropped is not drift
    return {f: row[f] for f in _COMPARED}


def _lease_text(seconds: int) -> str:
    return "permanent" if seconds == 0 else format_duration(seconds)


def destroy(
    manifest: Manifest,
    table: list[PortMapping],
    router: RouterInfo | None = None,
    local: str | None = None,
    store: OwnershipStore | None = None,
) -> Plan:
    """The plan that removes every mapping this owner holds."""
    claims = owned_rows(manifest, table, store=store)
    return diff(replace(manifest, mappings=(), prune=True), table, router, local=local, claims=claims, store=store)
