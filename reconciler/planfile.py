"""Saved plans: write one, read one back strictly, and refuse it unless it is what would be planned now.

A saved plan is input like any other and is trusted with nothing. It carries the manifest text it
was made from and the guards it was made with; at apply time portctl plans again from that manifest
against the router as it is now (ownership, policy, protection and deletion guards all checked
again) and writes that plan, only if it equals the saved one. Reading is typed: every field is
checked for its type, range and printability, and anything else is one PlanFileError naming the
file and the field, never a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import xmlsafe
from .errors import PlanFileError
from .models import (
    MAX_LEASE,
    Action,
    Change,
    FieldChange,
    MappingKey,
    Plan,
    PortMapping,
    Protocol,
    RouterInfo,
    upnp_router,
)
from .render import FORMAT_VERSION, plan_json

MAX_BYTES = 64 * 1024 * 1024  # every port of both protocols, three times over, fits well within this
MAX_MANIFEST = 1024 * 1024
MAX_ROWS = 2 * 65535
T = TypeVar("T")
_LAYOUT = str.maketrans("", "", "\n\r\t")
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
    doc = plan_json(plan)
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


class _Bad(Exception):
    """One malformed field: where it is and what is wrong with it."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def load(path: str) -> Saved:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read saved plan: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise PlanFileError(f"{path}: not a portctl plan: larger than {MAX_BYTES // 2**20} MiB")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_no_float)
    except (ValueError, RecursionError) as exc:
        # RecursionError: a document nested thousands deep. ValueError covers invalid UTF-8,
        # broken JSON, NaN and Infinity, and integers too long to convert.
        why = "nested too deeply" if isinstance(exc, RecursionError) else xmlsafe.printable(str(exc), 200)
        raise PlanFileError(f"{path}: not a portctl plan: it is not valid JSON ({why})") from exc
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise PlanFileError(
            f"{path}: not a portctl plan of format_version {FORMAT_VERSION} (nor a manifest: no apiVersion)"
        )
    if "manifest" not in doc:
        raise PlanFileError(
            f"{path}: the saved plan does not carry its manifest (an older portctl made it); run plan again"
        )
    try:
        saved = _saved(doc)
    except _Bad as exc:
        raise PlanFileError(f"{path}: malformed saved plan: {exc}") from exc
    if doc["conflicts"] or doc["blocked"]:
        raise PlanFileError(f"{path}: the saved plan has conflicts or is blocked and cannot be applied")
    return saved


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a plan holds")


def _no_float(text: str) -> None:
    raise ValueError(f"{text[:20]} is not a number a plan holds: every number in a plan is whole")


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
    if shown == planned:
        return
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
    return (c.action, c.name, c.key, before, c.after, c.replace, c.same_port_ok, fields)


def _change_text(c: Change) -> str:
    row = c.after or c.before
    target = f" -> {row.internal_client}:{row.internal_port} {row.description!r}" if row else ""
    return f"{c.action.value} {c.name} {c.key}{target}"


def _stable(m: PortMapping) -> tuple[object, ...]:
    # Remaining lease time counts down on its own; it is not a change of the table.
    return (m.internal_client, m.internal_port, m.description, m.enabled)


def _show(row: tuple[object, ...] | None) -> str:
    return "absent" if row is None else f"{row[0]}:{row[1]} {row[2]!r}"


# -- typed reading ---------------------------------------------------------------------------


def _saved(doc: dict[str, Any]) -> Saved:
    source = _object(doc, "manifest", "")
    guards = _object(doc, "guards", "")
    max_deletions = guards.get("max_deletions")
    plan = Plan(
        owner=_text(doc, "owner", "", 200),
        changes=_list(doc, "changes", "", _change),
        foreign=_list(doc, "foreign", "", _mapping),
        kept=_list(doc, "kept", "", _mapping),
        router=_router(_object(doc, "router", ""), "router"),
        table=_list(doc, "table", "", _mapping),
        blocked=_text(doc, "blocked", "", 2000),
        quirks=_list(doc, "quirks", "", lambda v, at: _is_text(v, at, 200)),
    )
    _list(doc, "conflicts", "", lambda v, at: v)
    return Saved(
        plan,
        _text(source, "path", "manifest", 4096),
        _text(source, "text", "manifest", MAX_MANIFEST, lines=True),
        None if max_deletions is None else _int(guards, "max_deletions", "guards", 0, 2**31),
        _bool(guards, "allow_empty", "guards"),
    )


def _router(d: dict[str, Any], at: str) -> RouterInfo:
    # Saved plans name a UPnP router the way its description does (render.router_json).
    return upnp_router(
        location=_text(d, "location", at, 2048),
        udn=_text(d, "udn", at, 200),
        friendly_name=_text(d, "friendly_name", at, 200),
        igd_version=_int(d, "igd_version", at, 1, 2),
        service_type=_text(d, "service_type", at, 200),
        external_ip=_text(d, "external_ip", at, 64),
    )


def _key(d: dict[str, Any], at: str) -> MappingKey:
    key = _object(d, "key", at)
    protocol = _text(key, "protocol", f"{at}.key", 3)
    if protocol not in Protocol.__members__:
        raise _Bad(f"{at}.key.protocol", f"{protocol!r} is not TCP or UDP")
    return MappingKey(_int(key, "external_port", f"{at}.key", 1, 65535), Protocol(protocol))


def _mapping(value: object, at: str) -> PortMapping:
    d = _is_object(value, at)
    return PortMapping(
        key=_key(d, at),
        internal_client=_text(d, "internal_client", at, 64),
        internal_port=_int(d, "internal_port", at, 0, 65535),
        description=_text(d, "description", at, 256),
        lease=_int(d, "lease", at, 0, 2 * MAX_LEASE),
        enabled=_bool(d, "enabled", at),
        remote_host=_text(d, "remote_host", at, 64),
    )


def _change(value: object, at: str) -> Change:
    d = _is_object(value, at)
    action = _text(d, "action", at, 10)
    if action not in {a.value for a in Action}:
        raise _Bad(f"{at}.action", f"{action!r} is not one of {', '.join(a.value for a in Action)}")
    key = _key(d, at)
    before = None if d.get("before") is None else _mapping(d["before"], f"{at}.before")
    after = None if d.get("after") is None else _mapping(d["after"], f"{at}.after")
    for row, name in ((before, "before"), (after, "after")):
        if row is not None and row.key != key:
            raise _Bad(f"{at}.{name}.key", f"{row.key} is not the change's key {key}")
    _text(d, "sensitive", at, 200)
    return Change(
        Action(action),
        _text(d, "name", at, 200),
        key,
        before,
        after,
        _text(d, "reason", at, 2000),
        _list(d, "fields", at, _field),
        _bool(d, "replace", at),
        _bool(d, "same_port_ok", at),
        _text(d, "note", at, 2000),
    )


def _field(value: object, at: str) -> FieldChange:
    d = _is_object(value, at)
    return FieldChange(_text(d, "field", at, 40), _scalar(d, "before", at), _scalar(d, "after", at))


# -- one value of each type: missing, wrong type, out of range or unprintable is a _Bad -----


def _get(d: dict[str, Any], name: str, at: str) -> object:
    if name not in d:
        raise _Bad(_join(at, name), "missing")
    return d[name]


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def _describe(value: object) -> str:
    text = repr(value)
    return xmlsafe.printable(text if len(text) <= 40 else text[:37] + "...", 60)


def _is_object(value: object, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(at, f"expected an object, not {_describe(value)}")
    return value


def _object(d: dict[str, Any], name: str, at: str) -> dict[str, Any]:
    return _is_object(_get(d, name, at), _join(at, name))


def _is_text(value: object, at: str, limit: int, *, lines: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(at, f"expected text, not {_describe(value)}")
    if len(value) > limit:
        raise _Bad(at, f"longer than {limit} characters")
    # A manifest's text keeps its line breaks and tabs (and a byte-order mark, which YAML allows).
    visible = value.removeprefix("\ufeff").translate(_LAYOUT) if lines else value
    if not visible.isprintable():
        raise _Bad(at, f"holds control or unprintable characters: {_describe(value)}")
    return value


def _text(d: dict[str, Any], name: str, at: str, limit: int, *, lines: bool = False) -> str:
    return _is_text(_get(d, name, at), _join(at, name), limit, lines=lines)


def _int(d: dict[str, Any], name: str, at: str, low: int, high: int) -> int:
    value = _get(d, name, at)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Bad(_join(at, name), f"expected a whole number from {low} to {high}, not {_describe(value)}")
    return value


def _bool(d: dict[str, Any], name: str, at: str) -> bool:
    value = _get(d, name, at)
    if not isinstance(value, bool):
        raise _Bad(_join(at, name), f"expected true or false, not {_describe(value)}")
    return value


def _scalar(d: dict[str, Any], name: str, at: str) -> object:
    value = _get(d, name, at)
    if isinstance(value, str):
        return _is_text(value, _join(at, name), 256)
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) <= 2**32):
        return value
    raise _Bad(_join(at, name), f"expected a field value, not {_describe(value)}")


def _list(d: dict[str, Any], name: str, at: str, item: Callable[[object, str], T]) -> tuple[T, ...]:
    value = _get(d, name, at)
    where = _join(at, name)
    if not isinstance(value, list):
        raise _Bad(where, f"expected a list, not {_describe(value)}")
    if len(value) > MAX_ROWS:
        raise _Bad(where, f"more than {MAX_ROWS} entries")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
