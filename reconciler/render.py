"""Renderings of a Plan, an ApplyReport and a router table: text for people, JSON for machines. Pure.
A plan's JSON is the plan codec's document (plancodec.encode), so `plan --format json` prints what
`plan --out` saves."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from . import madethrough, ownership
from .boot import Booted
from .durations import format_duration
from .models import (
    MAX_LEASE,
    Action,
    Adaptation,
    ApplyReport,
    Change,
    Conflict,
    Drift,
    HeldPinhole,
    MappingKey,
    PinholeAction,
    PinholeChange,
    Plan,
    PortMapping,
    RouterInfo,
)
from .plancodec import header, key_json, pinhole_key_json, router_json, sensitive, time_json
from .quirks import MEANING, Learned, Quirk

_SYMBOL = {Action.ADD: "+", Action.CHANGE: "~", Action.RENEW: "~", Action.REMOVE: "-"}
_PINHOLE_SYMBOL = {PinholeAction.OPEN: "+", PinholeAction.RENEW: "~", PinholeAction.CLOSE: "-"}
_COLOR = {"+": "32", "~": "33", "-/+": "33", "-": "31", "!": "1;31", "dim": "2"}


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, kind: str, text: str) -> str:
        return f"\033[{_COLOR[kind]}m{text}\033[0m" if self.color else text


def router_line(info: RouterInfo) -> str:
    if info.igd_version:
        service = info.service_type.rsplit(":", 2)[-2:]
        spoken = f"IGD v{info.igd_version}, {':'.join(service)}"
    else:
        spoken = info.protocol
    return (
        f"Router: {info.description or 'unnamed'} ({spoken}) "
        f"at {info.address}, external IP {info.external_ip or 'unknown'}"
    )


def lease_text(seconds: int) -> str:
    return "permanent" if seconds == 0 else format_duration(seconds)


def _target(m: PortMapping) -> str:
    return f"{m.internal_client}:{m.internal_port}"


def summary_line(plan: Plan) -> str:
    s = plan.summary
    line = f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove."
    if s["conflict"]:
        line = line[:-1] + f", {s['conflict']} conflict{'s' if s['conflict'] > 1 else ''}."
    if plan.pinholes:
        counts = [plan.count_pinholes(a) for a in PinholeAction]
        line += " Pinholes: {} to open, {} to renew, {} to close.".format(*counts)
    return line


def plan_text(plan: Plan, style: Style) -> str:
    out = []
    if plan.router:
        out.append(router_line(plan.router))
        out.append("")
    if plan.quirks:
        out.append("This router is known to need (planned for):")
        out += [f"    - it {q}" for q in plan.quirks]
        out.append("")
    if plan.blocked:
        out.append(style("!", f"Blocked: {plan.blocked}."))
        out.append("")
    width = max([len(c.name) for c in plan.changes] + [len(c.name) for c in plan.conflicts] + [4])
    if plan.changes or plan.conflicts:
        out.append(f'portctl will make these changes for owner "{plan.owner}":')
        for c in plan.changes:
            out += _change_lines(c, width, style)
        for k in plan.conflicts:
            out.append(style("!", f"  ! {k.name:<{width}} {k.key!s:<11}") + f" {_conflict_text(k)}")
    if plan.pinholes:
        if plan.changes or plan.conflicts:
            out.append("")
        through = {"pcp": " (through PCP)", "upnp": " (through UPnP)"}.get(plan.pinholes_through, "")
        out.append(f'IPv6 pinholes portctl will open, renew and close for owner "{plan.owner}"{through}:')
        out += [_pinhole_line(c, style, plan.pinholes_through) for c in plan.pinholes]
    if not (plan.changes or plan.conflicts or plan.pinholes):
        out.append(f'No changes: the router matches the manifest for owner "{plan.owner}".')
    protected = [m for m in plan.kept if m.key in plan.protected]
    for title, rows in (
        ("Owned but no longer declared, kept because prune is off:", [m for m in plan.kept if m not in protected]),
        ("Owned but no longer declared, kept because it is protected:", protected),
    ):
        if rows:
            out += ["", title, *(f"    {m.key}  -> {_target(m)}  {m.description!r}" for m in rows)]
    if plan.foreign:
        out.append("")
        out.append(style("dim", f"Foreign mappings, left alone ({len(plan.foreign)}):"))
        out += [style("dim", f"    {m.key!s:<11} -> {_target(m)}  {m.description!r}{_made(m)}") for m in plan.foreign]
    out.append("")
    out.append(summary_line(plan))
    return "\n".join(out)


def _pinhole_line(c: PinholeChange, style: Style, through: str = "upnp") -> str:
    symbol = _PINHOLE_SYMBOL[c.action]
    head = style(symbol, f"  {symbol:<3} {c.name:<16} {c.key!s}")
    if c.after is None:
        held = f" UniqueID {c.before.unique_id}" if c.before else ""
        return f"{head}  close{held} ({c.reason})"
    verb = "open" if c.action is PinholeAction.OPEN else "renew"
    # PCP maps it afresh (closed for a moment, established connections kept): say so where it was open.
    again = ", closed and mapped again" if through == "pcp" and c.before is not None else ""
    return f"{head}  {verb}{again}, lease {format_duration(c.after.lease)} ({c.reason})"


def held_text(held: Collection[HeldPinhole], now: float, owner: str) -> str:
    """The pinholes `owner` holds on this router, as its inventory records them (the router lists none)."""
    if not held:
        return f"\nNo IPv6 pinholes recorded for owner {owner!r} on this router."
    out = [f"\nIPv6 pinholes owner {owner!r} holds (as recorded here; the router lists none):"]
    for h in held:
        left = int(h.expires - now)
        remaining = f"{format_duration(left)} left" if left > 0 else "expired"
        lease = format_duration(h.pinhole.lease)
        out.append(f"  {h.name:<16} {h.key!s}  lease {lease}, {remaining}  UniqueID {h.unique_id}")
    return "\n".join(out)


def held_json(h: HeldPinhole, now: float) -> dict[str, Any]:
    return {
        "name": h.name,
        "key": pinhole_key_json(h.key),
        "lease": h.pinhole.lease,
        "unique_id": h.unique_id,
        "remaining": max(0, int(h.expires - now)),
        "expires": time_json(h.expires),
    }


def _conflict_text(k: Conflict) -> str:
    if k.holder is None:
        return k.reason
    return f"{k.reason}: {_target(k.holder)} {k.holder.description!r}{_made(k.holder)}"


def _made(m: PortMapping) -> str:
    """`  (made through NAT-PMP by 192.168.77.2)` for a row miniupnpd made for PCP or NAT-PMP; else ""."""
    said = madethrough.label(m)
    return f"  ({said})" if said else ""


def remote_text(m: PortMapping) -> str:
    return f"from {m.remote_host}" if m.remote_host else "from any remote host"


def _written(m: PortMapping) -> str:
    """Every field of a row as it will be written, but the description (the row's own line has the name)."""
    return f"{_target(m)}  lease {lease_text(m.lease)}  {remote_text(m)}"


def _shown(value: object, field: str) -> str:
    if field == "lease" and isinstance(value, int):
        return lease_text(value)
    if field == "remote_host":
        return str(value) or "any remote host"
    return str(value)


def adapted_text(a: Adaptation) -> str:
    """One adaptation: what changed, the router's need, and the opt-in that allowed it."""
    need = f"the router {MEANING[Quirk(a.need)]} [{a.need}]" if a.need in Quirk._value2member_map_ else a.need
    if not a.proven:
        need += " (suspected)"
    why = f"; allowed by {a.allowed_by}" if a.allowed_by else ""
    return f"adapted: {a.field} {_shown(a.asked, a.field)} -> {_shown(a.written, a.field)} ({need}{why})"


def _change_lines(c: Change, width: int, style: Style) -> list[str]:
    lines = _change_text(c, width, style)
    why = sensitive(c)
    if why:
        lines[0] += style("!", f"  [sensitive: {why}]")
    if c.after is not None and c.action is not Action.ADD:
        lines.append(f"        writes {_written(c.after)}")
    lines += [style("!" if a.allowed_by else "~", f"        {adapted_text(a)}") for a in c.adapted]
    if c.window is not None:
        lines.append(f"        the router may grant a port from {c.window} (next_free); the one granted is kept")
    if c.note and c.action is not Action.REMOVE:  # a removal's note is on its own lines already
        lines.append(style("!", f"        {c.note}"))
    if c.drift is not None:
        lines.append(style("!" if c.drift is not Drift.HEAL else "~", f"        {drift_text(c.drift)}"))
    return lines


def drift_text(mode: Drift) -> str:
    """What a drift change is, and what the agent does with it under its mapping's mode."""
    does = {
        Drift.HEAL: "the agent heals it",
        Drift.WARN: "the agent only reports it; portctl apply writes it",
        Drift.IGNORE: "the agent leaves it alone; portctl apply writes it",
    }[mode]
    return f"drift ({mode}): the router's row changed or went behind portctl's back; {does}"


def _change_text(c: Change, width: int, style: Style) -> list[str]:
    symbol = "-/+" if c.replace else _SYMBOL[c.action]
    head = f"  {symbol:<3} {c.name:<{width}} {c.key!s:<11}"
    if c.action == Action.ADD and c.after:
        detail = f" -> {_written(c.after)}"
        if c.reason != "declared":
            detail += f"  ({c.reason})"
        return [style("+", head) + detail]
    if c.action == Action.REMOVE and c.before:
        lines = [style("-", head) + f" -> {_target(c.before)}  ({c.reason})"]
        return lines + ([style("!", f"        {c.note}")] if c.note else [])
    if c.action == Action.RENEW:
        return [style("~", head) + f" renew ({c.reason})"]
    lines = [style(symbol, head) + f" ({c.reason})"]
    for f in c.fields:
        lines.append(f"        {f.field}: {f.before!r} -> {f.after!r}")
    if c.replace and not c.fields and c.before:
        lines.append(f"        replaces {_target(c.before)} {c.before.description!r}")
    return lines


def report_text(report: ApplyReport, style: Style) -> str:
    out = []
    for r in report.results:
        c = r.change
        mark = style("+", "done   ") if r.ok else style("!", "SKIPPED" if r.skipped else "FAILED ")
        line = f"  {mark} {c.action.value:<6} {c.name} {c.key}"
        if r.granted is not None:
            line += f": granted {r.granted.external_port} instead of {c.key.external_port} (next_free)"
        out.append(line + ("" if r.ok else f": {r.error}"))
    for p in report.pinholes:
        mark = style("+", "done   ") if p.ok else style("!", "FAILED ")
        said = f" (UniqueID {p.unique_id})" if p.ok else f": {p.error}"
        said += f": {style('!', 'WARNING')} {p.warning}" if p.warning else ""
        out.append(f"  {mark} {p.change.action.value:<6} pinhole {p.change.name} {p.change.key}{said}")
    done = sum(1 for r in report.results if r.ok)
    skipped = len(report.skipped)
    out.append("")
    if report.unverified:
        out.append(style("!", f"Not verified: the table could not be read back ({report.unverified})."))
        out.append('"done" means the router acknowledged the write.')
    tail = f", {skipped} skipped" if skipped else ""
    if report.results or not report.pinholes:
        out.append(f"Apply: {done} done, {len(report.results) - done - skipped} failed{tail}.")
    if report.pinholes:
        ok = sum(1 for p in report.pinholes if p.ok)
        out.append(f"Pinholes: {ok} done, {len(report.pinholes) - ok} failed.")
    return "\n".join(out)


# A row read back just after its write has counted down the seconds the apply took: within this of
# the lease asked for, the router holds what was asked (and the note names it as asked, not 1h59m58s).
READBACK_SLACK = 60


@dataclass(frozen=True)
class LeaseEnd:
    """The shortest lease an apply wrote, as the router holds it: `seconds` from the read back on."""

    seconds: int
    what: str  # `web 8080/tcp`, `pinhole ssh`
    asked: int  # the lease the plan asked for (0: permanent)
    count: int  # the leases written that end, this one included


def shortest_lease(report: ApplyReport) -> LeaseEnd | None:
    """The shortest lease this apply wrote that ends, or None. Each mapping's is the one the router listed
    when apply read its table back (IGD v2 makes "permanent" 7 days; a router may shorten any lease),
    falling back to the one asked for where the table could not be read or does not list the row."""
    table = {m.key: m for m in report.table} if report.table is not None else {}
    ends: list[tuple[int, str, int]] = []
    for r in report.results:
        if not r.ok or r.change.after is None:
            continue
        key, asked = r.granted or r.change.key, r.change.after.lease
        row = table.get(key)
        held = asked if row is None else row.lease
        if asked and (held == 0 or 0 <= asked - held < READBACK_SLACK):
            # The lease asked for, counted down by the apply's seconds; or a finite one listed as 0, which a
            # router that does not count leases answers too: warning of the end asked for is the safe side.
            held = asked
        elif not asked and 0 <= MAX_LEASE - held < READBACK_SLACK:
            held = MAX_LEASE  # IGD v2's "permanent", counted down by the apply's seconds: 7d, not 6d23h59m58s
        if held > 0:
            ends.append((held, f"{r.change.name} {key}", asked))
    ends += [
        (p.change.after.lease, f"pinhole {p.change.name}", p.change.after.lease)
        for p in report.pinholes
        if p.ok and p.change.after
    ]
    if not ends:
        return None
    held, what, asked = min(ends)
    return LeaseEnd(held, what, asked, len(ends))


def leases_text(report: ApplyReport, now: float) -> str:
    """When the shortest lease this apply wrote runs out (`now` on the wall clock), and what keeps the
    leases alive; "" where it wrote none that ends. A lease written by hand lapses silently otherwise."""
    end = shortest_lease(report)
    if end is None:
        return ""
    at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + end.seconds))
    more = f" ({end.count} leases written)" if end.count > 1 else ""
    return (
        f"Leases: the shortest written ({end.what}) runs out in {format_duration(end.seconds)}, at {at}{more}"
        f"{held_for(end)}. Nothing renews them but portctl: run `portctl agent`, which renews each at half its "
        "lease, or apply again before then."
    )


def held_for(end: LeaseEnd) -> str:
    """`; the router holds it for 7d, not permanent as asked` where it holds another lease than asked; else ""."""
    if end.asked == end.seconds:
        return ""
    return f"; the router holds it for {format_duration(end.seconds)}, not {lease_text(end.asked)} as asked"


def table_text(
    info: RouterInfo,
    table: list[PortMapping],
    owned: Collection[MappingKey],
    style: Style,
    learned: Learned | None = None,
    booted: Booted | None = None,
) -> str:
    """The router's table; the rows at `owned` keys are marked as the manifest's owner's."""
    out = [router_line(info)]
    if booted is not None:
        out.append(f"Booted: {booted.text()}")
    out.append("")
    if learned and learned.quirks:
        out.append("Learned about this router (portctl plans for it):")
        for quirk, lesson in learned.quirks.items():
            proof = "seen" if lesson.proven else "suspected from"
            out.append(f"    - it {MEANING[quirk]}  [{quirk}; {proof}: {lesson.evidence}]")
        out.append("")
    if not table:
        out.append("The router holds no port mappings.")
    for m in sorted(table, key=lambda m: m.key):
        who = owner_label(m, owned)
        row = f"  {m.key!s:<11} -> {_target(m):<21} lease {lease_text(m.lease):<10} {who:<8} {m.description!r}"
        row += _made(m)
        out.append(row if who == "owned" else style("dim", row))
    return "\n".join(out)


def owner_label(m: PortMapping, owned: Collection[MappingKey]) -> str:
    if m.key in owned:
        return "owned"
    return "portctl" if m.description.startswith(ownership.PREFIX) else "foreign"


# -- JSON: plans are the codec's (plancodec.py); the rest is here ---------------------------


def report_json(report: ApplyReport, router: RouterInfo | None = None, *, now: float) -> dict[str, Any]:
    """apply's (and destroy's) document: each write's result, keys as every document writes them, and when
    the shortest lease written runs out (`now` on the wall clock: when the table was read back)."""
    end = shortest_lease(report)
    return {
        **header("apply"),
        "router": None if router is None else router_json(router),
        "ok": report.ok,
        "unverified": report.unverified,
        "leases_end": None if end is None else time_json(now + end.seconds),
        "results": [
            {
                "action": r.change.action.value,
                "name": r.change.name,
                "key": key_json(r.change.key),
                "ok": r.ok,
                "skipped": r.skipped,
                "final": r.final,
                "error": r.error,
                "granted": None if r.granted is None else key_json(r.granted),
            }
            for r in report.results
        ],
        "pinholes": [
            {
                "action": p.change.action.value,
                "name": p.change.name,
                "key": pinhole_key_json(p.change.key),
                "ok": p.ok,
                "unique_id": p.unique_id,
                "final": p.final,
                "error": p.error,
                "warning": p.warning,
            }
            for p in report.pinholes
        ],
    }
