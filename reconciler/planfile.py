"""Saved plans: read one back, and refuse it when the router's table moved on since it was made."""

from __future__ import annotations

import json
from typing import Any

from .errors import PlanFileError
from .models import Action, Change, FieldChange, MappingKey, Plan, PortMapping, Protocol, RouterInfo
from .render import FORMAT_VERSION


def load(path: str) -> Plan:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise PlanFileError(f"{path}: cannot read saved plan: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise PlanFileError(f"{path}: not a portctl plan of format_version {FORMAT_VERSION}")
    if doc.get("conflicts") or doc.get("blocked"):
        raise PlanFileError(f"{path}: the saved plan has conflicts and cannot be applied")
    try:
        return Plan(
            owner=doc["owner"],
            changes=tuple(_change(c) for c in doc["changes"]),
            foreign=tuple(_mapping(m) for m in doc["foreign"]),
            router=RouterInfo(**doc["router"]) if doc.get("router") else None,
            table=tuple(_mapping(m) for m in doc["table"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(f"{path}: malformed saved plan ({type(exc).__name__}: {exc})") from exc


def check_current(saved: Plan, table: list[PortMapping], router: RouterInfo) -> None:
    """Raise PlanFileError naming every entry that differs between the saved and the live table."""
    if saved.router and saved.router.udn != router.udn:
        raise PlanFileError(
            f"the plan was made for router {saved.router.udn} ({saved.router.location}), "
            f"not {router.udn} ({router.location}); make a new plan"
        )
    before = {m.key: _stable(m) for m in saved.table}
    now = {m.key: _stable(m) for m in table}
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        lines = [f"  {k}: was {_show(before.get(k))}, now {_show(now.get(k))}" for k in differ]
        raise PlanFileError("the router's table changed since the plan was made; make a new plan:\n" + "\n".join(lines))


def _stable(m: PortMapping) -> tuple[object, ...]:
    # Remaining lease time counts down on its own; it is not a change of the table.
    return (m.internal_client, m.internal_port, m.description, m.enabled)


def _show(row: tuple[object, ...] | None) -> str:
    return "absent" if row is None else f"{row[0]}:{row[1]} {row[2]!r}"


def _mapping(d: dict[str, Any]) -> PortMapping:
    key = MappingKey(int(d["key"]["external_port"]), Protocol(d["key"]["protocol"]))
    return PortMapping(
        key,
        str(d["internal_client"]),
        int(d["internal_port"]),
        str(d["description"]),
        int(d["lease"]),
        bool(d["enabled"]),
        str(d["remote_host"]),
    )


def _change(d: dict[str, Any]) -> Change:
    key = MappingKey(int(d["key"]["external_port"]), Protocol(d["key"]["protocol"]))
    return Change(
        Action(d["action"]),
        str(d["name"]),
        key,
        _mapping(d["before"]) if d["before"] else None,
        _mapping(d["after"]) if d["after"] else None,
        str(d["reason"]),
        tuple(FieldChange(f["field"], f["before"], f["after"]) for f in d["fields"]),
        bool(d["replace"]),
        bool(d.get("same_port_ok", False)),
        str(d.get("note", "")),
    )
