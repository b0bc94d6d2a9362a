"""Saved plans: write one, read one back strictly, and refuse it unless it is what would be planned now.

A saved plan is input like any other and is trusted with nothing. It carries the manifest text it
was made from and the guards it was made with; at apply time portctl plans again from that manifest
against the router as it is now (ownership, policy, protection and deletion guards all checked
again) and writes that plan, only if it equals the saved one. Reading is typed (plancodec.decode): every
field is checked for its type, range and printability, and anything else is one PlanFileError
naming the file and the field, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from . import plancodec, xmlsafe
from .errors import PlanFileError
from .models import Change, Plan, PortMapping, RouterInfo
from .plancodec import FORMAT_VERSION, Malformed

MAX_BYTES = 64 * 1024 * 1024  # every port of both protocols, three times over, fits well within this
MAX_MANIFEST = 1024 * 1024
# A key as JSON writes it: inside a JSON string (a manifest's text that a plan carries) the quotes are
# escaped, so these never match there.
_FORMAT_KEY = re.compile(rb'"format_version"\s*:')
_API_KEY = re.compile(rb'[{,]\s*["\']?apiVersion["\']?\s*:')


@dataclass(frozen=True)
class Saved:
    """A saved plan as read: the plan it shows, and what is needed to make it again."""

    plan: Plan
    manifest_path: str
    manifest_text: str
    max_deletions: int | None = None
    allow_empty: bool = False


def document(
    plan: Plan, manifest_path: str, manifest_text: str, *, max_deletions: int | None, allow_empty: bool
) -> dict[str, Any]:
    """What to save for `plan`: its JSON form, the manifest it was made from and the guards it was made with."""
    doc = plancodec.encode(plan)
    doc["manifest"] = {"path": manifest_path, "text": manifest_text}
    doc["guards"] = {"max_deletions": max_deletions, "allow_empty": allow_empty}
    return doc


def is_plan(path: str) -> bool:
    """Is the file at `path` a saved plan rather than a manifest? Told by content, not by name.

    A saved plan is a JSON object naming its format_version; a manifest names its apiVersion, in YAML
    or in JSON (which is YAML). A JSON object naming neither is read as a plan, whose reader says
    precisely what is wrong with it; a file that cannot be read is left to the manifest reader.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError:
        return False
    if not raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return False  # YAML in block style: a manifest
    return bool(_FORMAT_KEY.search(raw)) or not _API_KEY.search(raw)


def load(path: str) -> Saved:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read saved plan: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise PlanFileError(f"{path}: not a portctl plan: larger than {MAX_BYTES // 2**20} MiB")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        # RecursionError: a document nested thousands deep. ValueError covers invalid UTF-8,
        # broken JSON, NaN and Infinity, and integers too long to convert.
        why = "nested too deeply" if isinstance(exc, RecursionError) else xmlsafe.printable(str(exc), 200)
        raise PlanFileError(f"{path}: not a portctl plan: it is not valid JSON ({why})") from exc
    if not isinstance(doc, dict) or "format_version" not in doc:
        raise PlanFileError(
            f"{path}: not a portctl plan of format_version {FORMAT_VERSION} (nor a manifest: no apiVersion)"
        )
    version = doc["format_version"]
    if version != FORMAT_VERSION:
        # Version 1 wrote "1"; the plan it holds is re-planned from its manifest at apply anyway, so
        # nothing is lost by making it again, and a reader of two shapes would be one more way to misread.
        said = xmlsafe.printable(repr(version), 40)
        raise PlanFileError(
            f"{path}: a portctl plan of format_version {said}; this portctl reads format_version "
            f"{FORMAT_VERSION}: make the plan again (portctl plan MANIFEST --out {path}). Nothing was changed"
        )
    if doc.get("kind") != "plan":
        kind = xmlsafe.printable(repr(doc.get("kind")), 40)
        raise PlanFileError(
            f"{path}: a portctl document of kind {kind}, not a saved plan (kind 'plan'): "
            "apply takes a manifest or a plan saved by plan --out. Nothing was changed"
        )
    # Checked after the kind, so that another document of the family is named as what it is.
    if fraction := _fraction(doc):
        why = f"{fraction} is not a number a plan holds: every number in a plan is whole but a time's epoch"
        raise PlanFileError(f"{path}: not a portctl plan: it is not valid JSON ({why})")
    if "manifest" not in doc:
        raise PlanFileError(
            f"{path}: the saved plan does not carry its manifest (an older portctl made it); run plan again"
        )
    try:
        saved = _saved(doc)
    except Malformed as exc:
        raise PlanFileError(f"{path}: malformed saved plan: {exc}") from exc
    if saved.plan.conflicts or saved.plan.blocked:
        raise PlanFileError(f"{path}: the saved plan has conflicts or is blocked and cannot be applied")
    return saved


def _fraction(doc: object) -> str:
    """The first number with a fraction outside a time's "epoch" ("" if none); iterative, as a
    document nested deep is read."""
    todo: list[tuple[str, object]] = [("", doc)]
    while todo:
        name, value = todo.pop()
        if isinstance(value, float) and (name != "epoch" or not math.isfinite(value)):
            return xmlsafe.printable(repr(value), 40)
        if isinstance(value, dict):
            todo += value.items()
        elif isinstance(value, list):
            todo += (("", v) for v in value)
    return ""


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a plan holds")


def check_current(saved: Plan, table: list[PortMapping], router: RouterInfo) -> None:
    """Raise PlanFileError naming every entry that differs between the saved and the live table."""
    if saved.router and saved.router.identity != router.identity:
        raise PlanFileError(
            f"the plan was made for router {saved.router.identity} ({saved.router.address}), "
            f"not {router.identity} ({router.address}); make a new plan"
        )
    before = {m.key: _stable(m) for m in saved.table}
    now = {m.key: _stable(m) for m in table}
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        lines = [f"  {k}: was {_show(before.get(k))}, now {_show(now.get(k))}" for k in differ]
        raise PlanFileError("the router's table changed since the plan was made; make a new plan:\n" + "\n".join(lines))


def check_replanned(path: str, saved: Plan, now: Plan) -> None:
    """Raise PlanFileError unless `now`, planned again from the saved manifest, writes what `saved` shows."""
    if saved.owner != now.owner:
        raise PlanFileError(
            f"{path}: the saved plan is for owner {saved.owner!r}, its manifest for {now.owner!r}; "
            "nothing was changed. Run plan again"
        )
    shown = [_essence(c) for c in saved.changes]
    planned = [_essence(c) for c in now.changes]
    # The service that opens them is part of what was approved: PCP opens a pinhole to every remote host.
    holes_shown = [(c.action, c.name, c.key, c.after, saved.pinholes_through) for c in saved.pinholes]
    holes_planned = [(c.action, c.name, c.key, c.after, now.pinholes_through) for c in now.pinholes]
    if shown == planned and holes_shown == holes_planned:
        return
    if shown == planned:
        raise PlanFileError(
            f"{path}: the IPv6 pinholes to open, renew or close are not those the saved plan shows; "
            "nothing was changed. Run plan again"
        )
    lines = [f"  only in the saved plan: {_change_text(c)}" for c in saved.changes if _essence(c) not in planned]
    lines += [f"  only in a plan made now: {_change_text(c)}" for c in now.changes if _essence(c) not in shown]
    raise PlanFileError(
        f"{path}: the router changed since the plan was saved, or the plan was edited: it is not what its "
        "manifest plans now; nothing was changed. Run plan again" + "".join(f"\n{line}" for line in lines)
    )


def _essence(c: Change) -> tuple[object, ...]:
    """What a change writes. Remaining lease time counts down by itself, so it is left out."""
    before = _stable(c.before) if c.before else None
    fields = tuple((f.field, f.after) for f in c.fields)
    return (c.action, c.name, c.key, before, c.after, c.replace, c.same_port_ok, fields, c.window)


def _change_text(c: Change) -> str:
    row = c.after or c.before
    target = f" -> {row.internal_client}:{row.internal_port} {row.description!r}" if row else ""
    window = f" (the router may grant a port from {c.window})" if c.window else ""
    return f"{c.action.value} {c.name} {c.key}{target}{window}"


def _stable(m: PortMapping) -> tuple[object, ...]:
    # Remaining lease time counts down on its own; it is not a change of the table.
    return (m.internal_client, m.internal_port, m.description, m.enabled)


def _show(row: tuple[object, ...] | None) -> str:
    return "absent" if row is None else f"{row[0]}:{row[1]} {row[2]!r}"


def _saved(doc: dict[str, Any]) -> Saved:
    plancodec.read_object(doc, "router", "")  # a plan may lack one; a saved plan was made against a router
    plan = plancodec.decode(doc)
    source = plancodec.read_object(doc, "manifest", "")
    guards = plancodec.read_object(doc, "guards", "")
    max_deletions = guards.get("max_deletions")
    return Saved(
        plan,
        plancodec.read_text(source, "path", "manifest", 4096),
        plancodec.read_text(source, "text", "manifest", MAX_MANIFEST, lines=True),
        None if max_deletions is None else plancodec.read_int(guards, "max_deletions", "guards", 0, 2**31),
        plancodec.read_bool(guards, "allow_empty", "guards"),
    )
