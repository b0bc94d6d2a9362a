"""The one admission gate: is the final plan, rows as they will be written, allowed to be applied?

`admit` judges what `diff` planned (after the rows were shaped to the router's needs): the
manifest's policy (clients, ports and every port of a next_free window, `max_lease` on the lease as
written, permanent included),
sensitive ports, protection, the deletion guards, conflicts and a router that cannot map at all.
`plan`, `apply` (manifest or saved plan), `destroy` and the agent all pass through it; `manifest`
reports breaches of literal values earlier, with their file and line. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import nextfree, pinholes, pinholespec, policy
from .durations import format_duration
from .models import Action, Manifest, Plan, Refusal


def admit(
    plan: Plan,
    manifest: Manifest,
    *,
    max_deletions: int | None = None,
    allow_empty: bool = False,
    local_ipv6: Sequence[str] = (),
) -> list[Refusal]:
    """Every reason `plan` must not be applied; empty when it may. `local_ipv6` is this host's IPv6
    addresses, which a pinhole must lead to."""
    out = _pinhole_refusals(plan, manifest, local_ipv6)
    if plan.blocked:
        out.append(Refusal("blocked", plan.blocked))
    out += [Refusal("conflict", f"{k.name} {k.key}: {k.reason}", k.name, k.key) for k in plan.conflicts]
    rules = manifest.policy
    allowed_sensitive = {d.name for d in manifest.mappings if d.allow_sensitive}
    for c in plan.changes:
        row = c.after
        if row is None:
            if c.protect:  # as the ownership store claimed the row: a tag's mark or an inventory's record
                out.append(Refusal("protected", f"{c.name} {c.key} is protected; it is never removed", c.name, c.key))
            continue
        where = f"{c.name} {row.key}"
        if not policy.client_allowed(rules, row.internal_client):
            out.append(
                Refusal(
                    "policy",
                    f"{where} would forward to {row.internal_client}, outside policy.allowed_internal_clients",
                    c.name,
                    c.key,
                )
            )
        if not policy.port_allowed(rules, row.key.external_port):
            out.append(Refusal("policy", f"{where} is outside policy.allowed_external_ports", c.name, c.key))
        if c.window is not None:
            # Any port of the window may be written: each is judged as the declared one is.
            breaches = nextfree.breaches(c.window, row.key.external_port, rules, c.name in allowed_sensitive)
            out += [Refusal("policy", f"{where}: {why} (next_free)", c.name, c.key) for why in breaches]
        if not policy.lease_allowed(rules, row.lease):
            lease = "permanent" if row.lease == 0 else format_duration(row.lease)
            out.append(
                Refusal(
                    "policy",
                    f"{where} would be written with a {lease} lease (as the router needs it), "
                    f"longer than policy.max_lease ({format_duration(rules.max_lease)})",
                    c.name,
                    c.key,
                )
            )
        why = policy.sensitive(row.key.external_port, row.internal_port) if c.action is not Action.RENEW else ""
        if why and c.name not in allowed_sensitive:
            out.append(
                Refusal(
                    "sensitive",
                    f"{where} exposes {why} to the internet; set allow_sensitive: true if that is meant",
                    c.name,
                    c.key,
                )
            )
    too_many = policy.too_many_deletions(plan, max_deletions)
    if too_many:
        out.append(Refusal("deletions", too_many))
    deletes = plan.count(Action.REMOVE)
    if not manifest.mappings and manifest.prune and deletes and not allow_empty:
        out.append(
            Refusal(
                "empty",
                f"the manifest declares no mappings, so prune would delete all {deletes} this owner holds; "
                "pass --allow-empty if that is meant",
            )
        )
    return out


def _pinhole_refusals(plan: Plan, manifest: Manifest, local: Sequence[str]) -> list[Refusal]:
    """A pinhole that the router cannot open, that the policy does not allow, or a router without pinholes."""
    out: list[Refusal] = []
    opening = [c for c in plan.pinholes if c.after is not None]
    if opening and plan.pinholes_unavailable:
        out.append(Refusal("pinholes", f"pinholes cannot be opened on this router: {plan.pinholes_unavailable}"))
        return out
    for c in opening:
        assert c.after is not None
        found = pinholes.problems(c.after, local, plan.pinholes_through)
        out += [Refusal("pinhole", f"{c.name} {message}", c.name) for message in found]
        if not pinholespec.prefix_allowed(manifest.policy, c.key.internal_client):
            out.append(
                Refusal(
                    "policy",
                    f"{c.name} pinhole {c.key} leads to {c.key.internal_client}, outside policy.allowed_ipv6_prefixes",
                    c.name,
                )
            )
    return out


def blocking(refusals: list[Refusal]) -> str:
    """The refusals a plan's `blocked` line carries: all but conflicts (which the plan lists itself)."""
    return "; ".join(r.message for r in refusals if r.kind != "conflict")
