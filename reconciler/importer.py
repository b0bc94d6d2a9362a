"""`portctl import`: manifest entries for foreign mappings a user selected. Pure.

Each entry forwards what the row forwards today (port, protocol, host, internal port, remote host)
and says `on_conflict: takeover`: the next apply takes exactly that row over (the planner takes
over a foreign row only at the declared port of a takeover mapping) by deleting it and adding it
again with the owner's tag, so the port closes for a moment. A row carrying a portctl tag is some
owner's (perhaps another installation's) and is never imported. Nor is a disabled row: a manifest
cannot declare one, so its entry would open at the next apply what the router now keeps shut.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import madethrough, ownership, policy
from .durations import format_duration
from .models import MAX_LEASE, PortMapping
from .selection import Selection

NAME_LENGTH = 24  # the schema's name pattern: [A-Za-z0-9][A-Za-z0-9._-]{0,23}
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class Imported:
    """What `import` makes of a selection: the entries' text, and the selected rows it left out, with why."""

    entries: tuple[tuple[str, PortMapping], ...]  # (name, row)
    skipped: tuple[tuple[PortMapping, str], ...]
    text: str


def slug(description: str, port: int = 0) -> str:
    """`description` as the start of a mapping name: lower case, runs of anything else as one '-',
    without the number `port` (the name ends with it anyway)."""
    text = _UNSAFE.sub("-", description.lower())
    if port:
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", "-", text)
    return re.sub(r"-{2,}", "-", text).strip("-._") or "mapping"


def names(rows: Sequence[PortMapping]) -> dict[PortMapping, str]:
    """A stable, unique, schema-valid name per row: from its description and port, then its
    protocol, then a count where two rows would still share one."""
    out: dict[PortMapping, str] = {}
    used: set[str] = set()
    for row in sorted(rows, key=lambda r: r.key):
        base = slug(row.description, row.key.external_port)
        for suffix in (f"-{row.key.external_port}", f"-{row.key.external_port}-{row.key.protocol.lower()}"):
            name = _fit(base, suffix)
            if name not in used:
                break
        n = 2
        while name in used:
            name = _fit(base, f"-{row.key.external_port}-{row.key.protocol.lower()}-{n}")
            n += 1
        used.add(name)
        out[row] = name
    return out


def _fit(base: str, suffix: str) -> str:
    head = base[: NAME_LENGTH - len(suffix)].rstrip("-._")
    return f"{head}{suffix}" if head else suffix.lstrip("-")


def why_not(row: PortMapping) -> str:
    """Why `row` cannot be imported, or "" when it can."""
    if row.description.startswith(ownership.PREFIX):
        return "it carries a portctl owner tag: it is a portctl owner's, not an app's"
    if not row.enabled:
        return "it is disabled: a manifest cannot declare a disabled mapping, and the entry would open it"
    if not _ipv4(row.internal_client):
        return f"its internal client {row.internal_client!r} is not an IPv4 address"
    if not 1 <= row.internal_port <= 65535:
        return f"its internal port {row.internal_port} is not a port"
    return ""


def lease_value(seconds: int) -> str:
    """The lease to declare for a row with `seconds` left: permanent stays permanent; what is left of
    a finite one, up to the next whole minute (the router does not say how long it was)."""
    if seconds <= 0:
        return "permanent"
    return format_duration(min(MAX_LEASE, -(-seconds // 60) * 60))


def entry(name: str, row: PortMapping) -> str:
    """One manifest entry for `row`, with a comment saying what was found."""
    found = f"found {row.key} -> {row.internal_client}:{row.internal_port} {row.description!a}"
    lease = "permanent lease" if row.lease == 0 else f"lease {format_duration(row.lease)} left"
    made = madethrough.label(row)
    lines = [f"  # {found}, {lease}{f', {made}' if made else ''}"]
    exposed = policy.sensitive(row.key.external_port, row.internal_port)
    if exposed:
        lines.append(f"  # open today: {exposed}; allow_sensitive keeps it open (remove the entry if it is not meant)")
    lines += [
        f"  - name: {name}",
        f"    external_port: {row.key.external_port}",
        f"    protocol: {row.key.protocol.lower()}",
        f"    internal_client: {row.internal_client}",
        f"    internal_port: {row.internal_port}",
        f"    lease: {lease_value(row.lease)}",
    ]
    if row.remote_host and _ipv4(row.remote_host):
        lines.append(f"    remote_host: {row.remote_host}")
    if exposed:
        lines.append("    allow_sensitive: true")
    lines.append("    on_conflict: takeover  # apply re-tags it: delete, then add (the port closes for a moment)")
    return "\n".join(lines)


def build(table: Sequence[PortMapping], selection: Selection) -> Imported:
    """The entries for the rows of `table` that `selection` picks and that can be imported."""
    chosen, skipped = [], []
    for row in selection.pick(table):
        why = why_not(row)
        if why:
            skipped.append((row, why))
        else:
            chosen.append(row)
    named = names(chosen)
    entries = tuple((named[r], r) for r in chosen)
    text = "\n".join(entry(name, row) for name, row in entries)
    return Imported(entries, tuple(skipped), text + "\n" if text else "")


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
