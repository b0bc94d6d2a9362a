"""Plans, apply reports and router tables as GitHub-flavoured markdown: for a pull-request comment or
a job summary. Pure: the same view as render.py's text, no I/O, no clock (the caller says when the
router was read and what time it is now).

Every piece of text that came from a manifest or a router goes through `cell` first: a description
is data, and must neither break a table, start markup or math (`$x$`), ping anyone (`@team`, `org/repo#1`),
nor make a link (`https://x`, `www.x`, `a@b.c`, `GH-12`, a commit's SHA).

A document is cut to `max_bytes` (UTF-8): GitHub keeps a comment under 65536 characters and a step's
job summary under 1 MiB. The summary, the warnings and every heading always stay; sections give up
their rows in order of how much a reviewer needs them (removals first to stay, foreign rows first to
go), each saying how many rows it left out.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .audit import KINDS, PROBE_TIMEOUT, Audit
from .boot import Booted
from .durations import format_duration
from .models import (
    Action,
    ApplyReport,
    Change,
    HeldPinhole,
    MappingKey,
    PinholeAction,
    PinholeChange,
    Plan,
    PortMapping,
    RouterInfo,
)
from .plancodec import sensitive
from .quirks import MEANING, Learned
from .render import (
    adapted_text,
    drift_text,
    held_for,
    lease_text,
    owner_label,
    remote_text,
    router_line,
    shortest_lease,
    summary_line,
)

COMMENT_BYTES = 65_536  # a GitHub pull-request comment (the limit is in characters; bytes are never fewer)
SUMMARY_BYTES = 1_048_576  # a GitHub job summary ($GITHUB_STEP_SUMMARY) per step
MIN_BYTES = 8_192  # room for the parts never cut: summary, warnings, headings, cut lines
CELL_CHARS = 300  # one piece of foreign text at most, before escaping: a row's size stays bounded
LINE_CHARS = 600  # the same for a line of its own (the router line)

# Markdown and HTML syntax characters, as entities: inert in a table cell, shown as themselves.
_ENTITIES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "&#124;",
    "\\": "&#92;",
    "`": "&#96;",
    "*": "&#42;",
    "~": "&#126;",
    "[": "&#91;",
    "]": "&#93;",
    "$": "&#36;",  # `$…$` and `$$…$$` are math on GitHub
}
_BREAK = re.compile(r"\r\n|[\r\n\u2028\u2029\x0b\x0c\x85]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# GitHub links `@name` (pings a user or team) and `#12` / `owner/repo#12` (backlinks an issue):
# a zero-width space after the sign stops both and reads the same (before escaping: entities hold `#`).
# After `@` it also stops an e-mail autolink (`a@b.c`, `mailto:a@b.c`, even `a@.b.c`): the domain
# must follow the `@` at once.
_MENTION = re.compile(r"[@#](?=[\w-])|@(?=\.)")
# GitHub autolinks a bare URL where `//` follows a scheme's colon at once (`https://x`, `ftp://x`:
# a space after the `//` still links, to a broken host) and `www.` before a domain. A zero-width
# space after the colon and after `www` stops both; the URL still reads the same.
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=[Ww]{3})(?=\.)")
# GitHub links `GH-123` (an issue, any case) and a bare commit SHA: 7 to 40 hex digits, alone as a word.
# A zero-width space after `GH-`, and after every 6th digit of a run of 7 or more (so that no part of a
# longer run, a real SHA put after some padding, is a SHA of its own), stops both and reads the same.
_ISSUE = re.compile(r"(?i:gh)-(?=\d)")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{7,}")
_ZWSP = "\u200b"
# An underscore inside a word (internal_client) opens no emphasis in GitHub's markdown; one at a word's edge may.
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_SYMBOL = {Action.ADD: "add", Action.CHANGE: "change", Action.RENEW: "renew", Action.REMOVE: "**remove**"}


def cell(text: object, limit: int = CELL_CHARS) -> str:
    """`text` as inert markdown for a table cell or a line: escaped, line breaks as `<br>`, at most `limit` characters
    of it kept."""
    raw = str(text)
    if len(raw) > limit:
        raw = raw[: limit - 1] + "…"
    raw = _MENTION.sub(lambda m: m.group(0) + _ZWSP, _CONTROL.sub("\ufffd", raw))
    raw = _AUTOLINK.sub(_ZWSP, raw)
    raw = _ISSUE.sub(lambda m: m.group(0) + _ZWSP, raw)
    raw = _HEX_RUN.sub(lambda m: _ZWSP.join(re.findall(".{1,6}", m.group(0))), raw)
    out = _EDGE_UNDERSCORE.sub("&#95;", "".join(_ENTITIES.get(ch, ch) for ch in raw))
    return _BREAK.sub("<br>", out)


def _code(key: object) -> str:
    """A key portctl formats itself (`8080/tcp`, `[2001:db8::5]:22/tcp`), as code; anything odd escaped."""
    text = str(key)
    return f"`{text}`" if re.fullmatch(r"[\w:./\[\]* -]+", text) else cell(text)


@dataclass(frozen=True)
class Read:
    """When the router's table was read, and when this is shown: the age a reviewer must weigh."""

    at: float  # seconds on the wall clock
    now: float
    source: str = "read live"  # how it was read: "read live", "from snapshot FILE"

    def text(self) -> str:
        stamp = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        age = format_duration(max(0, round(self.now - self.at)))
        return f"{self.source} at {stamp}, {age} ago"


@dataclass
class _Section:
    """A part of the document whose rows may be cut; its head and tail always stay."""

    head: list[str]
    rows: list[str]
    tail: list[str] = field(default_factory=list)
    noun: str = "rows"


def _size(lines: Sequence[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def _cut_line(left_out: int, noun: str, max_bytes: int) -> str:
    return f"*… {left_out} more {noun} left out to stay under {max_bytes} bytes; `--format text` shows every row.*"


def _fit(top: list[str], sections: list[_Section], max_bytes: int) -> str:
    """`top` and the sections, each with as many rows as fit in `max_bytes` taken in order."""
    if max_bytes < MIN_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_BYTES}, not {max_bytes}")
    sections = [s for s in sections if s.rows or s.head]
    fixed = _size(top) + sum(_size([*s.head, *s.tail, "", _cut_line(len(s.rows), s.noun, max_bytes)]) for s in sections)
    budget = max_bytes - fixed
    if budget < 0:
        raise ValueError(f"the parts of this document that are never cut take more than {max_bytes} bytes")
    out = list(top)
    for s in sections:
        kept = 0
        for row in s.rows:
            if _size([row]) > budget:
                break
            budget -= _size([row])
            kept += 1
        out += s.head + s.rows[:kept]
        if kept < len(s.rows):
            out += ["", _cut_line(len(s.rows) - kept, s.noun, max_bytes)]
        out += s.tail
    return "\n".join(out)


def _details(summary: str, head: list[str], rows: list[str], noun: str) -> _Section:
    """A folded section: `<details>` with a table or list inside (blank lines let GitHub render markdown there)."""
    return _Section(["", "<details>", f"<summary>{summary}</summary>", "", *head], rows, ["", "</details>"], noun)


# -- plans ------------------------------------------------------------------------------------


def plan_markdown(plan: Plan, read: Read | None = None, *, max_bytes: int = COMMENT_BYTES) -> str:
    """`plan` as one markdown document of at most `max_bytes` bytes (with a final newline)."""
    return _fit(_plan_top(plan, read), _plan_sections(plan), max_bytes)


def _plan_top(plan: Plan, read: Read | None) -> list[str]:
    top = [f"**{summary_line(plan)}**", ""]  # portctl's words and numbers: nothing to escape
    where = [f"Owner {cell(plan.owner)}."]
    if plan.router:
        where.append(cell(router_line(plan.router), LINE_CHARS) + ".")
    if read:
        where.append(f"Table {cell(read.text())}.")
    top.append(" ".join(where))
    removed = plan.count(Action.REMOVE)
    replaced = sum(1 for c in plan.changes if c.replace)
    closed = plan.count_pinholes(PinholeAction.CLOSE)
    if removed or replaced or closed:
        parts = [
            f"removes {_count(removed, 'mapping')}" if removed else "",
            f"replaces {_count(replaced, 'mapping')} (deleted, then added)" if replaced else "",
            f"closes {_count(closed, 'IPv6 pinhole')}" if closed else "",
        ]
        top += ["", f"## ⚠️ This plan {_and([p for p in parts if p])}"]
    touchy = sum(1 for c in plan.changes if sensitive(c))
    if touchy:
        top += ["", f"> [!WARNING]\n> {_count(touchy, 'change')} exposes a sensitive port, marked ⚠️ below."]
    if plan.conflicts:
        top += ["", f"> [!CAUTION]\n> {_count(len(plan.conflicts), 'conflict')}: nothing is written until resolved."]
    return top


def _plan_sections(plan: Plan) -> list[_Section]:
    out: list[_Section] = []
    refusals = [r for r in plan.refusals if r.kind != "conflict"]
    if refusals or plan.blocked:
        rows = [f"- **{cell(r.kind)}**: {cell(r.message, LINE_CHARS)}" for r in refusals]
        rows = rows or [f"- {cell(plan.blocked, LINE_CHARS)}"]
        out.append(_Section(["", "### ⛔ Blocked: nothing in this plan may be applied", ""], rows, noun="refusals"))
    header = ["| | name | mapping | forwards to | lease | notes |", "|---|---|---|---|---|---|"]
    drops = [c for c in plan.changes if c.action is Action.REMOVE or c.replace]
    if drops:
        out.append(_Section(["", "### Removed or replaced", "", *header], [_change_row(c) for c in drops]))
    if plan.conflicts:
        rows = [
            f"| ❗ | {cell(k.name)} | {_code(k.key)} | {_holder(k.holder)} | {cell(k.reason)} |" for k in plan.conflicts
        ]
        head = ["", "### Conflicts", "", "| | name | mapping | held by | why |", "|---|---|---|---|---|"]
        out.append(_Section(head, rows, noun="conflicts"))
    rest = [c for c in plan.changes if c not in drops]
    if rest:
        out.append(_Section(["", "### Changes", "", *header], [_change_row(c) for c in rest]))
    if plan.pinholes:
        through = {"pcp": " (through PCP)", "upnp": " (through UPnP)"}.get(plan.pinholes_through, "")
        head = ["", f"### IPv6 pinholes{through}", "", "| | name | pinhole | lease | why |", "|---|---|---|---|---|"]
        out.append(_Section(head, [_pinhole_row(c, plan.pinholes_through) for c in plan.pinholes], noun="pinholes"))
    if plan.pinholes_unavailable:
        out.append(_Section(["", f"IPv6 pinholes cannot be opened here: {cell(plan.pinholes_unavailable)}."], []))
    if not plan.has_changes and not plan.conflicts:
        out.append(_Section(["", f"No changes: the router matches the manifest for owner {cell(plan.owner)}."], []))
    if plan.kept:
        protected = set(plan.protected)
        rows = [
            f"| {_code(m.key)} | {_target(m)} | {cell(m.description)} | "
            f"{'protected' if m.key in protected else 'prune is off'} |"
            for m in plan.kept
        ]
        head = ["| mapping | forwards to | description | kept because |", "|---|---|---|---|"]
        out.append(_details(f"Owned but no longer declared, kept ({len(plan.kept)})", head, rows, "rows"))
    if plan.foreign:
        head = ["| mapping | forwards to | lease | description |", "|---|---|---|---|"]
        rows = [_foreign_row(m) for m in plan.foreign]
        out.append(_details(f"Foreign mappings, left alone ({len(plan.foreign)})", head, rows, "foreign mappings"))
    if plan.quirks:
        rows = [f"- it {cell(q)}" for q in plan.quirks]
        out.append(_details(f"What this router is known to need, planned for ({len(plan.quirks)})", [], rows, "needs"))
    return out


def _change_row(c: Change) -> str:
    action = "**replace**" if c.replace else _SYMBOL[c.action]
    row = c.after or c.before
    lease = lease_text(c.after.lease) if c.after else ""
    if c.before and c.after and _target(c.before) != _target(c.after):
        to = f"{_target(c.before)} → {_target(c.after)}"
    else:
        to = _target(row) if row else ""
    notes = [cell(c.reason)] if c.reason else []
    why = sensitive(c)
    if why:
        notes.insert(0, f"⚠️ **sensitive**: {cell(why)}")
    notes += [f"{cell(f.field)}: {cell(repr(f.before))} → {cell(repr(f.after))}" for f in c.fields]
    if c.replace and not c.fields and c.before:
        notes.append(f"replaces {_target(c.before)} {cell(c.before.description)}")
    if c.after and c.after.remote_host:
        notes.append(cell(remote_text(c.after)))
    notes += [cell(adapted_text(a)) for a in c.adapted]
    if c.note:
        notes.append(f"**{cell(c.note)}**")
    if c.drift is not None:
        notes.append(cell(drift_text(c.drift)))
    return f"| {action} | {cell(c.name)} | {_code(c.key)} | {to} | {lease} | {'<br>'.join(notes)} |"


def _pinhole_row(c: PinholeChange, through: str) -> str:
    if c.after is None:
        held = f" (UniqueID {c.before.unique_id})" if c.before else ""
        return f"| **close** | {cell(c.name)} | {_code(c.key)} | | {cell(c.reason)}{held} |"
    again = " (closed and mapped again)" if through == "pcp" and c.before is not None else ""
    verb = c.action.value + again
    return f"| {verb} | {cell(c.name)} | {_code(c.key)} | {format_duration(c.after.lease)} | {cell(c.reason)} |"


def _foreign_row(m: PortMapping) -> str:
    from . import madethrough

    made = madethrough.label(m)
    said = f" ({cell(made)})" if made else ""
    return f"| {_code(m.key)} | {_target(m)} | {lease_text(m.lease)} | {cell(m.description)}{said} |"


def _holder(m: PortMapping | None) -> str:
    return f"{_target(m)} {cell(m.description)}" if m else ""


def _target(m: PortMapping) -> str:
    return cell(f"{m.internal_client}:{m.internal_port}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# -- apply ------------------------------------------------------------------------------------


def apply_markdown(plan: Plan, report: ApplyReport, read: Read | None = None, *, max_bytes: int = COMMENT_BYTES) -> str:
    """The plan that was applied and what became of each write, as one document of at most `max_bytes`; with
    `read` (its `now` is when the table was read back), when the shortest lease written runs out."""
    done = sum(1 for r in report.results if r.ok)
    skipped = len(report.skipped)
    verdict = f"Apply: {done} done, {len(report.results) - done - skipped} failed"
    verdict += f", {skipped} skipped." if skipped else "."
    if report.pinholes:
        ok = sum(1 for p in report.pinholes if p.ok)
        verdict += f" Pinholes: {ok} done, {len(report.pinholes) - ok} failed."
    top = [f"**{verdict}**", ""]
    if report.unverified:
        top += [f"> [!WARNING]\n> Not verified: the table could not be read back ({cell(report.unverified)}).", ""]
    end = shortest_lease(report)
    if end is not None and read is not None:
        at = datetime.fromtimestamp(read.now + end.seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
        more = f" ({end.count} leases written)" if end.count > 1 else ""
        top += [
            f"Leases: the shortest written ({cell(end.what)}) runs out in {format_duration(end.seconds)}, at {at}"
            f"{more}{held_for(end)}. Nothing renews them but portctl: run `portctl agent`, or apply again before then.",
            "",
        ]
    top += _plan_top(plan, read)
    rows = []
    for r in report.results:
        mark = "done" if r.ok else ("**SKIPPED**" if r.skipped else "**FAILED**")
        c = r.change
        rows.append(f"| {mark} | {cell(c.action.value)} | {cell(c.name)} | {_code(c.key)} | {cell(r.error)} |")
    for p in report.pinholes:
        mark = "done" if p.ok else "**FAILED**"
        said = (f"UniqueID {p.unique_id}" + (f": ⚠️ {cell(p.warning)}" if p.warning else "")) if p.ok else cell(p.error)
        c2 = p.change
        rows.append(f"| {mark} | {c2.action.value} pinhole | {cell(c2.name)} | {_code(c2.key)} | {said} |")
    head = ["", "### Result", "", "| | action | name | key | error |", "|---|---|---|---|---|"]
    sections = [_Section(head, rows, noun="results")] if rows else []
    return _fit(top, sections + _plan_sections(plan), max_bytes)


# -- show -------------------------------------------------------------------------------------


def table_markdown(
    info: RouterInfo,
    table: Sequence[PortMapping],
    owned: Collection[MappingKey],
    *,
    owner: str = "",
    learned: Learned | None = None,
    booted: Booted | None = None,
    held: Sequence[HeldPinhole] = (),
    read: Read | None = None,
    protocol: str = "",
    max_bytes: int = COMMENT_BYTES,
) -> str:
    """The router's table as markdown; given the manifest's `owner`, its rows first and the others folded."""
    rows = sorted(table, key=lambda m: m.key)
    mine = [m for m in rows if m.key in owned]
    others = [m for m in rows if m.key not in owned]
    top = [f"**{cell(router_line(info), LINE_CHARS)}**", ""]
    facts = [f"{_count(len(table), 'mapping')}, {len(mine)} owned by {cell(owner)}." if owner else ""]
    facts += [f"Booted: {cell(booted.text())}." if booted else "", f"Table {cell(read.text())}." if read else ""]
    facts.append(f"Protocol: {cell(protocol)}." if protocol else "")
    top.append(" ".join(f for f in facts if f) or f"{_count(len(table), 'mapping')}.")
    head = ["| mapping | forwards to | lease | owner | description |", "|---|---|---|---|---|"]
    sections = []
    if owner:
        sections.append(_Section(["", f"### Owned by {cell(owner)}", "", *head], [_shown(m, owned) for m in mine]))
        if others:
            title = f"Other mappings, left alone ({len(others)})"
            sections.append(_details(title, head, [_shown(m, owned) for m in others], "mappings"))
    elif rows:
        sections.append(_Section(["", *head], [_shown(m, owned) for m in rows], noun="mappings"))
    if not table:
        sections.append(_Section(["", "The router holds no port mappings."], []))
    if held and read:
        head = ["| name | pinhole | lease | left | UniqueID |", "|---|---|---|---|---|"]
        prows = [
            f"| {cell(h.name)} | {_code(h.key)} | {format_duration(h.pinhole.lease)} | "
            f"{_left(h, read.now)} | {h.unique_id} |"
            for h in held
        ]
        sections.append(_Section(["", "### IPv6 pinholes held (as recorded here)", "", *head], prows, noun="pinholes"))
    if learned and learned.quirks:
        lessons = [
            f"- it {cell(MEANING[q])} ({q}; {'seen' if lesson.proven else 'suspected from'}: {cell(lesson.evidence)})"
            for q, lesson in learned.quirks.items()
        ]
        title = f"What this router is known to need, planned for ({len(lessons)})"
        sections.append(_details(title, [], lessons, "needs"))
    return _fit(top, sections, max_bytes)


def _left(h: HeldPinhole, now: float) -> str:
    left = int(h.expires - now)
    return f"{format_duration(left)} left" if left > 0 else "expired"


def _shown(m: PortMapping, owned: Collection[MappingKey]) -> str:
    from . import madethrough

    made = madethrough.label(m)
    said = f" ({cell(made)})" if made else ""
    who = owner_label(m, owned)
    return f"| {_code(m.key)} | {_target(m)} | {lease_text(m.lease)} | {who} | {cell(m.description)}{said} |"


# -- audits -------------------------------------------------------------------------------------


def audit_markdown(
    result: Audit, info: RouterInfo | None, read: Read | None = None, *, max_bytes: int = COMMENT_BYTES
) -> str:
    """An audit's findings as markdown of at most `max_bytes`: one table row per finding and mapping."""
    n = len(result.findings)
    said = f"{_count(n, 'finding')}" if n else "nothing deserves a look"
    top = [f"**Audit of {_count(result.rows, 'mapping')}: {said}.**", ""]
    where = [cell(router_line(info), LINE_CHARS) + "."] if info else []
    if read:
        where.append(f"Table {cell(read.text())}.")
    if where:
        top.append(" ".join(where))
    if n:
        top += ["", "Findings: " + ", ".join(f"{result.count(k)} {k}" for k in KINDS if result.count(k)) + "."]
    rows = [
        f"| {cell(f.kind)} | {_code(r.key) if r else cell(f.subject)} | {_target(r) if r else ''} | "
        f"{cell(r.description) if r else ''} | {cell(f.why)} |"
        for f in result.findings
        for r in (f.rows or (None,))
    ]
    head = ["", "| finding | mapping | forwards to | description | why |", "|---|---|---|---|---|"]
    sections = [_Section(head, rows, noun="findings")] if rows else []
    probes = []
    if result.probed:
        probes.append(f"Probed {_count(len(result.probed), 'LAN host')} by a TCP connect ({PROBE_TIMEOUT:g}s each).")
    if result.unprobed:
        probes.append(f"Not probed (past the bound on probes or their time): {cell(', '.join(result.unprobed))}.")
    if probes:
        sections.append(_Section(["", *probes], []))
    return _fit(top, sections, max_bytes)
