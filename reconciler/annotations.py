"""Manifest problems and a plan's refusals and removals as GitHub Actions workflow commands
(`::error file=F,line=L,col=C::message`), so a workflow shows them on the pull request's lines. Pure.

The runner reads a command from any line of a step's output that starts with `::`, so every value
is escaped as the runner's own toolkit does it (`%`, CR and LF in a message; those and `:` and `,` in
a property): text from a manifest or a router can neither end a command early nor start another.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import Problem
from .models import Action, Manifest, MappingKey, PinholeAction, Plan

TITLE = "portctl"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, message: str, *, file: str = "", line: int = 0, col: int = 0, title: str = "") -> str:
    """One workflow command: `level` is error, warning or notice; a line or column of 0 is left out."""
    props = [("file", file), ("line", str(line) if line else ""), ("col", str(col) if col and line else "")]
    props.append(("title", title))
    said = ",".join(f"{k}={escape_property(v)}" for k, v in props if v)
    return f"::{level}{' ' + said if said else ''}::{escape_data(message)}"


def problem_commands(problems: Iterable[Problem]) -> list[str]:
    """Each manifest problem as an `::error` on its file, line and column."""
    out = []
    for p in problems:
        message = f"{p.path}: {p.message}" if p.path else p.message
        title = f"{TITLE}: invalid manifest"
        out.append(command("error", message, file=p.file, line=p.line, col=p.column, title=title))
    return out


def plan_commands(plan: Plan, manifest: Manifest, file: str) -> list[str]:
    """The plan's refusals as `::error` and its removals (replacements, pinholes closed) as `::warning`,
    each on the manifest line of the mapping it is about where the manifest declares it."""
    lines = _Lines(manifest)
    out = []
    for r in plan.refusals:
        # A refusal about a pinhole names it without a key; one about a mapping names both.
        line = lines.pinhole(r.name) if r.key is None else lines.mapping(r.name, r.key)
        out.append(command("error", r.message, file=file, line=line, title=f"{TITLE}: refused ({r.kind})"))
    if plan.blocked and not plan.refusals:  # a plan made before refusals were recorded says only this
        out.append(command("error", plan.blocked, file=file, title=f"{TITLE}: blocked"))
    for c in plan.changes:
        if c.action is Action.REMOVE or c.replace:
            what = "replaced (deleted, then added)" if c.replace else "removed"
            row = c.before or c.after
            target = f" -> {row.internal_client}:{row.internal_port}" if row else ""
            message = f"{c.name} {c.key}{target} will be {what}" + (f": {c.reason}" if c.reason else "")
            line = lines.mapping(c.name, c.key)
            out.append(command("warning", message, file=file, line=line, title=f"{TITLE}: {what.split()[0]}"))
    for p in plan.pinholes:
        if p.action is PinholeAction.CLOSE:
            message = f"IPv6 pinhole {p.name} {p.key} will be closed" + (f": {p.reason}" if p.reason else "")
            out.append(command("warning", message, file=file, line=lines.pinhole(p.name), title=f"{TITLE}: closed"))
    return out


class _Lines:
    """Where the manifest declares a mapping (by name and key, else by name) or a pinhole (by name)."""

    def __init__(self, manifest: Manifest) -> None:
        self.exact = {(d.name, d.key): d.line for d in manifest.mappings}
        self.named: dict[str, int] = {}
        for d in manifest.mappings:
            self.named.setdefault(d.name, d.line)
        self.pinholes: dict[str, int] = {}
        for h in manifest.pinholes:
            self.pinholes.setdefault(h.name, h.line)

    def mapping(self, name: str, key: MappingKey) -> int:
        return self.exact.get((name, key)) or self.named.get(name, 0)

    def pinhole(self, name: str) -> int:
        return self.pinholes.get(name, 0) if name else 0
