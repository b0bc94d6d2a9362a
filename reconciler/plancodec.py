"""The plan codec: a Plan as a JSON document and back, without loss. The one place that knows the
shape of a plan on disk; `plan --format json`, `plan --out` and `apply PLAN` all go through it.

`encode` writes every field of the Plan (kept rows, conflicts, the blocker, the admission gate's
refusals, each change's adaptations and opt-ins, what the router is known to need, the rows the
plan leads to) and a few derived for readers (`summary`, each change's `sensitive`), which `decode`
checks for type and then ignores. `decode` is strict: every field is checked for its type, range
and printability, and anything else is one Malformed naming the field, never a traceback.
A renderer for people (text, markdown) works from the Plan, not from this document.

It also holds the parts every JSON document of portctl shares (`header`, `key_json`, `mapping_json`,
`router_json`, `time_json`): plan, apply, show (the snapshot), audit and validate print one family,
of one FORMAT_VERSION, described by schemas/*.schema.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import policy, xmlsafe
from .models import (
    MAX_LEASE,
    PINHOLE_MAX_LEASE,
    Action,
    Adaptation,
    Change,
    Conflict,
    Drift,
    FieldChange,
    HeldPinhole,
    MappingKey,
    Pinhole,
    PinholeAction,
    PinholeChange,
    PinholeKey,
    Plan,
    PortMapping,
    PortWindow,
    Protocol,
    Refusal,
    RouterInfo,
    upnp_router,
)

# The version of the whole family of JSON documents. 2: every document names its `kind`; a key is an
# object everywhere (apply's report had "8080/tcp"); a time is {"time": ISO 8601 UTC, "epoch": seconds}.
FORMAT_VERSION = 2
KINDS = ("plan", "apply", "snapshot", "audit", "audit-clean", "validate")
MAX_ROWS = 2 * 65535
T = TypeVar("T")
_LAYOUT = str.maketrans("", "", "\n\r\t")


class Malformed(Exception):
    """One malformed field: where it is and what is wrong with it."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


def sensitive(c: Change) -> str:
    """Why this write exposes something sensitive ("" if it does not): flagged in every plan."""
    if c.after is None or c.action is Action.RENEW:
        return ""
    return policy.sensitive(c.after.key.external_port, c.after.internal_port)


# -- encoding --------------------------------------------------------------------------------


def header(kind: str) -> dict[str, Any]:
    """The two fields that open every document: which version of the family, and which kind of document."""
    assert kind in KINDS, kind
    return {"format_version": FORMAT_VERSION, "kind": kind}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_json(at: float) -> dict[str, Any]:
    """A moment on the wall clock: readable, and exact (the ISO form drops the fraction)."""
    return {"time": iso(at), "epoch": at}


def key_json(key: MappingKey) -> dict[str, Any]:
    return {"external_port": key.external_port, "protocol": key.protocol.value}


def router_json(info: RouterInfo) -> dict[str, Any]:
    """The router as saved plans and --format json have always named it, and its protocol."""
    return {
        "protocol": info.protocol,
        "location": info.address,
        "udn": info.identity,
        "friendly_name": info.description,
        "igd_version": info.igd_version,
        "service_type": info.service_type,
        "external_ip": info.external_ip,
    }


def mapping_json(m: PortMapping | None) -> dict[str, Any] | None:
    if m is None:
        return None
    d = asdict(m)
    d["key"] = key_json(m.key)
    return d


def pinhole_key_json(key: PinholeKey) -> dict[str, Any]:
    return {
        "internal_client": key.internal_client,
        "internal_port": key.internal_port,
        "protocol": key.protocol.value,
        "remote_host": key.remote_host,
        "remote_port": key.remote_port,
    }


def _pinhole_change_json(c: PinholeChange) -> dict[str, Any]:
    before = c.before
    return {
        "action": c.action.value,
        "name": c.name,
        "key": pinhole_key_json(c.key),
        "lease": c.after.lease if c.after else None,
        "before": None
        if before is None
        else {
            "name": before.name,
            "lease": before.pinhole.lease,
            "unique_id": before.unique_id,
            "expires": time_json(before.expires),
        },
        "reason": c.reason,
    }


def encode(plan: Plan) -> dict[str, Any]:
    """`plan` as a JSON document that `decode` reads back to an equal Plan."""
    return {
        **header("plan"),
        "owner": plan.owner,
        "router": router_json(plan.router) if plan.router else None,
        "changes": [_change_json(c) for c in plan.changes],
        "foreign": [mapping_json(m) for m in plan.foreign],
        "conflicts": [
            {"name": k.name, "key": key_json(k.key), "holder": mapping_json(k.holder), "reason": k.reason}
            for k in plan.conflicts
        ],
        "kept": [mapping_json(m) for m in plan.kept],
        "protected": [key_json(k) for k in plan.protected],
        "table": [mapping_json(m) for m in plan.table],
        "desired": [mapping_json(m) for m in plan.desired],
        "blocked": plan.blocked,
        "refusals": [
            {
                "kind": r.kind,
                "message": r.message,
                "name": r.name,
                "key": None if r.key is None else key_json(r.key),
            }
            for r in plan.refusals
        ],
        "quirks": list(plan.quirks),
        "pinholes": [_pinhole_change_json(c) for c in plan.pinholes],
        "pinholes_unavailable": plan.pinholes_unavailable,
        "pinholes_through": plan.pinholes_through,
        "summary": plan.summary,
    }


def _change_json(c: Change) -> dict[str, Any]:
    return {
        "action": c.action.value,
        "name": c.name,
        "key": key_json(c.key),
        "before": mapping_json(c.before),
        "after": mapping_json(c.after),
        "reason": c.reason,
        "replace": c.replace,
        "same_port_ok": c.same_port_ok,
        "allowed": list(c.allowed),
        "protect": c.protect,
        "adapted": [asdict(a) for a in c.adapted],
        "note": c.note,
        "sensitive": sensitive(c),
        "fields": [{"field": f.field, "before": f.before, "after": f.after} for f in c.fields],
        "window": None if c.window is None else {"low": c.window.low, "high": c.window.high},
        "drift": None if c.drift is None else c.drift.value,
    }


# -- decoding --------------------------------------------------------------------------------


def decode(doc: dict[str, Any]) -> Plan:
    """The Plan `doc` holds; raises Malformed naming the first field that is not as `encode` writes it."""
    router = doc.get("router")
    _object(doc, "summary", "")
    return Plan(
        owner=_text(doc, "owner", "", 200),
        changes=_list(doc, "changes", "", _change),
        foreign=_list(doc, "foreign", "", _mapping),
        conflicts=_list(doc, "conflicts", "", _conflict),
        kept=_list(doc, "kept", "", _mapping),
        # Plans saved before protection came from the ownership store carry no "protected".
        protected=_list(doc, "protected", "", _is_key) if "protected" in doc else (),
        router=None if router is None and "router" in doc else _router(_object(doc, "router", ""), "router"),
        table=_list(doc, "table", "", _mapping),
        blocked=_text(doc, "blocked", "", 2000),
        # A suspected need carries up to 80 characters of its evidence besides its meaning.
        quirks=_list(doc, "quirks", "", lambda v, at: _is_text(v, at, 1000)),
        # Plans saved before the rows they lead to were written carry no "desired": none to check.
        desired=_list(doc, "desired", "", _mapping) if "desired" in doc else (),
        refusals=_list(doc, "refusals", "", _refusal),
        # Plans saved before pinholes carry none.
        pinholes=_list(doc, "pinholes", "", _pinhole_change) if "pinholes" in doc else (),
        pinholes_unavailable=_text(doc, "pinholes_unavailable", "", 2000) if "pinholes_unavailable" in doc else "",
        # Plans saved before PCP pinholes opened theirs through UPnP.
        pinholes_through=_through(doc) if "pinholes_through" in doc else ("upnp" if "pinholes" in doc else ""),
    )


def _through(doc: dict[str, object]) -> str:
    value = _text(doc, "pinholes_through", "", 8)
    if value not in ("", "upnp", "pcp"):
        raise Malformed("pinholes_through", f"{value!r} is not upnp or pcp")
    return value


def _pinhole_key(value: object, at: str) -> PinholeKey:
    d = _is_object(value, at)
    protocol = _text(d, "protocol", at, 3)
    if protocol not in Protocol.__members__:
        raise Malformed(f"{at}.protocol", f"{protocol!r} is not TCP or UDP")
    return PinholeKey(
        _text(d, "internal_client", at, 64),
        _int(d, "internal_port", at, 1, 65535),
        Protocol(protocol),
        _text(d, "remote_host", at, 64),
        _int(d, "remote_port", at, 0, 65535),
    )


def _pinhole_change(value: object, at: str) -> PinholeChange:
    d = _is_object(value, at)
    action = _text(d, "action", at, 10)
    if action not in {a.value for a in PinholeAction}:
        raise Malformed(f"{at}.action", f"{action!r} is not one of {', '.join(a.value for a in PinholeAction)}")
    key = _pinhole_key(_get(d, "key", at), _join(at, "key"))
    lease = None if _get(d, "lease", at) is None else _int(d, "lease", at, 1, PINHOLE_MAX_LEASE)
    raw = _get(d, "before", at)
    before = None
    if raw is not None:
        b = _is_object(raw, f"{at}.before")
        where = f"{at}.before"
        expires = read_time(_object(b, "expires", where), f"{where}.expires")
        before = HeldPinhole(
            _text(b, "name", where, 200),
            Pinhole(key, _int(b, "lease", where, 1, PINHOLE_MAX_LEASE)),
            _int(b, "unique_id", where, 0, 2**32 - 1),
            expires,
        )
    after = None if lease is None else Pinhole(key, lease)
    if (after is None) != (action == PinholeAction.CLOSE.value):
        raise Malformed(f"{at}.lease", "a close has no lease, an open or renew has one")
    name, reason = _text(d, "name", at, 200), _text(d, "reason", at, 2000)
    return PinholeChange(PinholeAction(action), name, key, before, after, reason)


def _router(d: dict[str, Any], at: str) -> RouterInfo:
    # Saved plans name a UPnP router the way its description does (router_json); "protocol" is derived.
    protocol = _text(d, "protocol", at, 40) if "protocol" in d else ""
    if protocol in ("pcp", "natpmp"):
        # A router spoken to in PCP or NAT-PMP has no IGD version; its backend names the service so.
        return RouterInfo(
            protocol,
            _text(d, "udn", at, 200),
            _text(d, "location", at, 2048),
            _text(d, "friendly_name", at, 200),
            protocol,
            _text(d, "external_ip", at, 64),
        )
    return upnp_router(
        location=_text(d, "location", at, 2048),
        udn=_text(d, "udn", at, 200),
        friendly_name=_text(d, "friendly_name", at, 200),
        igd_version=_int(d, "igd_version", at, 1, 2),
        service_type=_text(d, "service_type", at, 200),
        external_ip=_text(d, "external_ip", at, 64),
    )


def _key(d: dict[str, Any], at: str) -> MappingKey:
    return _is_key(_get(d, "key", at), _join(at, "key"))


def _is_key(value: object, at: str) -> MappingKey:
    key = _is_object(value, at)
    protocol = _text(key, "protocol", at, 3)
    if protocol not in Protocol.__members__:
        raise Malformed(f"{at}.protocol", f"{protocol!r} is not TCP or UDP")
    return MappingKey(_int(key, "external_port", at, 1, 65535), Protocol(protocol))


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
        raise Malformed(f"{at}.action", f"{action!r} is not one of {', '.join(a.value for a in Action)}")
    key = _key(d, at)
    before = None if d.get("before") is None else _mapping(d["before"], f"{at}.before")
    after = None if d.get("after") is None else _mapping(d["after"], f"{at}.after")
    for row, name in ((before, "before"), (after, "after")):
        if row is not None and row.key != key:
            raise Malformed(f"{at}.{name}.key", f"{row.key} is not the change's key {key}")
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
        _list(d, "adapted", at, _adaptation),
        _list(d, "allowed", at, lambda v, w: _is_text(v, w, 40)),
        # Plans saved before it was written carry no "protect"; a saved plan is re-planned before
        # anything is written, so the flag read here never decides a write.
        _bool(d, "protect", at) if "protect" in d else False,
        # Plans saved before next_free windows carry none.
        _window(d, at, key) if d.get("window") is not None else None,
        # Plans saved before drift modes carry none: a plan by hand heals drift whatever its mode.
        _drift(d, at) if d.get("drift") is not None else None,
    )


def _drift(d: dict[str, Any], at: str) -> Drift:
    mode = _text(d, "drift", at, 10)
    if mode not in {m.value for m in Drift}:
        raise Malformed(f"{at}.drift", f"{mode!r} is not one of {', '.join(m.value for m in Drift)}")
    return Drift(mode)


def _window(d: dict[str, Any], at: str, key: MappingKey) -> PortWindow:
    w = _object(d, "window", at)
    where = f"{at}.window"
    window = PortWindow(_int(w, "low", where, 1, 65535), _int(w, "high", where, 1, 65535))
    if key.external_port not in window:
        raise Malformed(where, f"{window} does not hold the change's port {key.external_port}")
    return window


def _field(value: object, at: str) -> FieldChange:
    d = _is_object(value, at)
    return FieldChange(_text(d, "field", at, 40), _scalar(d, "before", at), _scalar(d, "after", at))


def read_time(d: dict[str, Any], at: str) -> float:
    """The epoch seconds of a `time_json` object, checked against its ISO form."""
    epoch = _get(d, "epoch", at)
    if not isinstance(epoch, int | float) or isinstance(epoch, bool) or not 0 <= epoch < 2**40:
        raise Malformed(_join(at, "epoch"), f"expected seconds since 1970, not {_describe(epoch)}")
    stamp = _text(d, "time", at, 40)
    try:
        parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise Malformed(_join(at, "time"), f"{stamp!r} is not an ISO 8601 UTC time") from None
    if abs(parsed - epoch) >= 1:
        raise Malformed(at, f"time {stamp} and epoch {epoch} disagree")
    return float(epoch)


# -- one value of each type: missing, wrong type, out of range or unprintable is Malformed ---


def _get(d: dict[str, Any], name: str, at: str) -> object:
    if name not in d:
        raise Malformed(_join(at, name), "missing")
    return d[name]


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def _describe(value: object) -> str:
    text = repr(value)
    return xmlsafe.printable(text if len(text) <= 40 else text[:37] + "...", 60)


def _is_object(value: object, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(at, f"expected an object, not {_describe(value)}")
    return value


def _object(d: dict[str, Any], name: str, at: str) -> dict[str, Any]:
    return _is_object(_get(d, name, at), _join(at, name))


def _is_text(value: object, at: str, limit: int, *, lines: bool = False) -> str:
    if not isinstance(value, str):
        raise Malformed(at, f"expected text, not {_describe(value)}")
    if len(value) > limit:
        raise Malformed(at, f"longer than {limit} characters")
    # A manifest's text keeps its line breaks and tabs (and a byte-order mark, which YAML allows).
    visible = value.removeprefix("\ufeff").translate(_LAYOUT) if lines else value
    if not visible.isprintable():
        raise Malformed(at, f"holds control or unprintable characters: {_describe(value)}")
    return value


def _text(d: dict[str, Any], name: str, at: str, limit: int, *, lines: bool = False) -> str:
    return _is_text(_get(d, name, at), _join(at, name), limit, lines=lines)


def _int(d: dict[str, Any], name: str, at: str, low: int, high: int) -> int:
    value = _get(d, name, at)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Malformed(_join(at, name), f"expected a whole number from {low} to {high}, not {_describe(value)}")
    return value


def _number(d: dict[str, Any], name: str, at: str, high: float) -> float:
    """A finite number from 0 to `high`: JSON's NaN and Infinity (which Python reads) are not numbers here."""
    value = _get(d, name, at)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise Malformed(_join(at, name), f"expected a number from 0 to {high:g}, not {_describe(value)}")
    return float(value)


def _bool(d: dict[str, Any], name: str, at: str) -> bool:
    value = _get(d, name, at)
    if not isinstance(value, bool):
        raise Malformed(_join(at, name), f"expected true or false, not {_describe(value)}")
    return value


def _scalar(d: dict[str, Any], name: str, at: str) -> object:
    value = _get(d, name, at)
    if isinstance(value, str):
        return _is_text(value, _join(at, name), 256)
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) <= 2**32):
        return value
    raise Malformed(_join(at, name), f"expected a field value, not {_describe(value)}")


def _list(d: dict[str, Any], name: str, at: str, item: Callable[[object, str], T]) -> tuple[T, ...]:
    value = _get(d, name, at)
    where = _join(at, name)
    if not isinstance(value, list):
        raise Malformed(where, f"expected a list, not {_describe(value)}")
    if len(value) > MAX_ROWS:
        raise Malformed(where, f"more than {MAX_ROWS} entries")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))


def _conflict(value: object, at: str) -> Conflict:
    d = _is_object(value, at)
    holder = None if d.get("holder", 0) is None else _mapping(_get(d, "holder", at), f"{at}.holder")
    return Conflict(_text(d, "name", at, 200), _key(d, at), holder, _text(d, "reason", at, 2000))


def _refusal(value: object, at: str) -> Refusal:
    d = _is_object(value, at)
    key = None if d.get("key", 0) is None else _key(d, at)
    return Refusal(_text(d, "kind", at, 40), _text(d, "message", at, 4000), _text(d, "name", at, 200), key)


def _adaptation(value: object, at: str) -> Adaptation:
    d = _is_object(value, at)
    return Adaptation(
        _text(d, "field", at, 40),
        _scalar(d, "asked", at),
        _scalar(d, "written", at),
        _text(d, "need", at, 200),
        _text(d, "allowed_by", at, 40),
        _bool(d, "proven", at),
    )


# For documents that carry a plan and more (a saved plan's manifest and guards), read as strictly.
read_object = _object
read_text = _text
read_int = _int
read_number = _number
read_bool = _bool
read_list = _list
read_mapping = _mapping
read_router = _router
