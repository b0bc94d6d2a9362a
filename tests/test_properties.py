"""Property tests (hypothesis): manifest parsing never fails other than with located problems, and
manifests written through YAML features (block scalars, tags, anchors, dates, non-ASCII digits) that
validate build exactly the rows they say, and for any declared set against any router table, applying
the plan on the emulator leaves exactly the declared owned rows and every foreign row as it was.

The example counts are fixed (derandomize=True, so CI runs the same cases every time) and are the
figures README gives.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler import api, manifest, ownership
from reconciler.apply import apply
from reconciler.backends import upnp
from reconciler.emulator import EmulatorServer, Router
from reconciler.errors import ConflictError, ManifestError
from reconciler.models import MappingKey, Protocol

MANIFEST_EXAMPLES = 400
DIFF_EXAMPLES = 500
PORTS = st.integers(min_value=30000, max_value=30011)  # few ports, so declared and actual rows collide
OWNER = "prop"
LAN = "127.0.0.1"  # what `auto` resolves to against the emulator on loopback

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=70000),
    st.text(max_size=12),
    st.sampled_from(["tcp", "udp", "both", "auto", "permanent", "1h", "10-20", "0", "192.168.1.5", "yes"]),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "name",
        "external_port",
        "internal_port",
        "protocol",
        "internal_client",
        "lease",
        "description",
        "remote_host",
        "on_conflict",
        "protect",
        "allow_sensitive",
        "allow_same_port",
        "bogus",
    ]
)
_mapping = st.dictionaries(_keys, _value, max_size=6)
_document = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["portctl/v1", "v2"]), "owner": st.sampled_from(["home", "", "x" * 40])},
    optional={
        "mappings": st.lists(_mapping, max_size=4),
        "defaults": st.dictionaries(st.sampled_from(["lease", "protocol", "internal_client"]), _value, max_size=2),
        "policy": st.dictionaries(
            st.sampled_from(["allowed_internal_clients", "allowed_external_ports", "max_lease"]), _value, max_size=3
        ),
        "prune": _value,
    },
)


@settings(max_examples=MANIFEST_EXAMPLES, derandomize=True, deadline=None)
@given(doc=_document)
def test_any_manifest_is_either_valid_or_located_problems(doc: dict[str, object]) -> None:
    """Whatever the document, parse returns a Manifest or raises ManifestError with located problems."""
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        m = manifest.parse(text, "m.yaml")
    except ManifestError as exc:
        assert exc.problems and all(p.file == "m.yaml" and p.line >= 0 for p in exc.problems)
        return
    assert all(1 <= d.key.external_port <= 65535 for d in m.mappings)


@settings(max_examples=MANIFEST_EXAMPLES, derandomize=True, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_is_either_valid_or_located_problems(text: str) -> None:
    try:
        manifest.parse(text, "m.yaml")
    except ManifestError as exc:
        assert exc.problems


_declared = st.dictionaries(
    st.tuples(PORTS, st.sampled_from(Protocol)), st.integers(min_value=1, max_value=3), max_size=8
)  # (port, protocol) -> internal port offset
_row_kind = st.sampled_from(["foreign", "owned", "owned-stale", "other-owner", "copied-tag"])
_actual = st.dictionaries(st.tuples(PORTS, st.sampled_from(Protocol)), _row_kind, max_size=8)


def _manifest_text(declared: dict[tuple[int, Protocol], int]) -> str:
    lines = [f"apiVersion: portctl/v1\nowner: {OWNER}\nmappings:"]
    for (port, proto), offset in sorted(declared.items()):
        lines.append(
            f"  - {{name: m{port}{proto.value.lower()}, external_port: {port}, "
            f"internal_port: {port + offset}, protocol: {proto.value.lower()}}}"
        )
    return "\n".join(lines) + ("\n" if declared else " []\n")


def _row_description(kind: str, port: int, proto: Protocol) -> str:
    key = MappingKey(port, proto)
    name = f"m{port}{proto.value.lower()}"
    if kind in ("owned", "owned-stale"):
        return ownership.describe(OWNER, key, name)
    if kind == "other-owner":
        return ownership.describe("someone", key, name)
    if kind == "copied-tag":  # this owner's tag for another key: foreign
        return ownership.describe(OWNER, MappingKey(port + 1000, proto), name)
    return f"foreign {port}"


_SERVER: list[EmulatorServer] = []


def _emulator() -> EmulatorServer:
    """One emulator for every example (a server per example costs more than the example)."""
    if not _SERVER:
        _SERVER.append(EmulatorServer(Router(igd_version=2)).start())
    server = _SERVER[0]
    server.router.reboot()  # an empty table
    return server


@settings(max_examples=DIFF_EXAMPLES, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declared=_declared, actual=_actual)
def test_applying_any_plan_yields_exactly_the_declared_rows_and_leaves_foreign_ones(
    declared: dict[tuple[int, Protocol], int], actual: dict[tuple[int, Protocol], str]
) -> None:
    server = _emulator()
    router = server.router
    for (port, proto), kind in actual.items():
        internal = port + (9 if kind == "owned-stale" else declared.get((port, proto), 1))
        client = LAN if kind.startswith("owned") else "192.168.1.9"
        router.add(port, proto.value, client, internal, _row_description(kind, port, proto))
    foreign_before = {
        (e.external_port, e.protocol): (e.internal_client, e.internal_port, e.description)
        for e in router.rows()
        if not ownership.is_owned(OWNER, MappingKey(e.external_port, Protocol(e.protocol)), e.description)
    }
    m = manifest.parse(_manifest_text(declared), "m.yaml")
    backend = upnp.connect(server.url)
    plan = api.plan(m, api.read(backend), allow_empty=True)
    if plan.conflicts:
        # Only a row this owner does not own can stand in the way, and then nothing is written.
        held = {(k.key.external_port, k.key.protocol) for k in plan.conflicts}
        assert all(actual.get(key) in ("foreign", "other-owner", "copied-tag") for key in held)
        before = sorted((e.external_port, e.protocol, e.description) for e in router.rows())
        with pytest.raises(ConflictError):
            apply(plan, backend)
        assert sorted((e.external_port, e.protocol, e.description) for e in router.rows()) == before
        return
    report = apply(plan, backend)
    assert report.ok, report.failed
    owned_now = {
        (e.external_port, Protocol(e.protocol)): e.internal_port
        for e in router.rows()
        if ownership.is_owned(OWNER, MappingKey(e.external_port, Protocol(e.protocol)), e.description)
    }
    assert owned_now == {key: key[0] + offset for key, offset in declared.items()}
    foreign_after = {
        (e.external_port, e.protocol): (e.internal_client, e.internal_port, e.description)
        for e in router.rows()
        if (e.external_port, Protocol(e.protocol)) not in owned_now
    }
    assert foreign_after == foreign_before
    again = api.plan(m, api.read(backend), allow_empty=True)  # and a second plan has nothing to do
    assert not [c for c in again.changes if c.action.value != "renew"]
    backend.close()


# -- YAML features: what validates builds exactly what it says --------------------------------------

YAML_EXAMPLES = 300
TIME_BOUND = 10.0  # seconds for one parse: generous, it only catches a parse that runs away
INVALID = None  # the oracle's verdict for a value no manifest may accept


def _string(text: str) -> st.SearchStrategy[tuple[str, object]]:
    """`text` written as YAML strings of every style, each with the Python string it reads as."""
    styles = [(json.dumps(text), text), (f"!!str {json.dumps(text)}", text)]
    if "\n" not in text:
        styles.append((f"'{text}'", text))
    if "\n" not in text.rstrip("\n") and text.strip() == text.rstrip("\n") and text.strip():
        line = text.rstrip("\n")
        kept = line + "\n"
        styles += [(f"|\n      {line}\n", kept), (f"|-\n      {line}\n", line), (f">\n      {line}\n", kept)]
        styles += [(f"|+\n      {line}\n\n", kept + "\n")]
    if re.fullmatch(r"[a-z][a-z0-9.]*", text) and text not in ("true", "false", "null"):
        styles.append((text, text))
    return st.sampled_from(styles)


def _integer(n: int) -> st.SearchStrategy[tuple[str, object]]:
    """`n` written as YAML 1.2 integers (decimal, hex, octal, !!int), and as things that are not one."""
    arabic = "".join(chr(0x660 + int(d)) for d in str(abs(n)))
    return st.sampled_from(
        [
            (str(n), n),
            (hex(n) if n >= 0 else str(n), n),
            (f"0o{n:o}" if n >= 0 else str(n), n),
            (f'!!int "{n}"', n),
            (f"{n}.0", float(n)),  # a float, even when whole
            (f'!!int "{arabic}"', "unreadable"),
            (f'!!int "{n}\u00b2"', "unreadable"),
            (f"!!str {n}", str(n)),
        ]
    )


_OTHER = st.sampled_from(
    [
        ("2024-01-02", dt.date(2024, 1, 2)),
        ("!!timestamp 2024-01-02 10:00:00", dt.datetime(2024, 1, 2, 10)),
        ("!!binary dWRw", b"udp"),
        ("!!bool true", True),
        ("null", None),
        ("[udp]", ["udp"]),
    ]
)


def _clean(pair: tuple[str, object]) -> bool:
    """A rendering that reads back as the value written (the interesting refusals come from the rest)."""
    return not isinstance(pair[1], float) and pair[1] != "unreadable" and not pair[0].startswith(("|\n", ">", "|+"))


def _mostly(valid: list[Any], anything: list[Any]) -> st.SearchStrategy[tuple[str, object]]:
    """Three in four values are valid ones, cleanly written, so accepted manifests are common too."""

    def render(value: Any) -> st.SearchStrategy[tuple[str, object]]:
        return _integer(value) if isinstance(value, int) else _string(value)

    clean = st.sampled_from(valid).flatmap(render).filter(_clean)
    return st.one_of(clean, clean, clean, st.sampled_from(anything).flatmap(render), _OTHER)


_protocol_value = _mostly(["tcp", "udp", "both", "TCP", "Udp"], ["udp", "icmp", "udp\n", "tcp ", "\u0442cp"])
_port_value = _mostly(
    [30000, 30005, "30001-30003"],
    [30000, 0, 70000, 65536, "30001-30003", "30003-30001", "30001-30003\n", "30001-70000", "3000\u00b2-30003"],
)
_lease_value = _mostly(
    [1, 3600, 604800, "permanent", "90m", "1h30m", "7d", "3600"],
    [3600, 0, 604801, -5, "permanent", "8d", "0", "90m\n", "permanent\n", "\u0663m"],
)
_client_value = _mostly(
    ["auto", "10.0.0.5"], ["auto", "10.0.0.5", "10.0.0.5\n", "auto\n", "0.0.0.0", "10.0.0.256", "\u0661.0.0.5"]
)


def _protocols_of(value: object) -> tuple[Protocol, ...] | None:
    if not isinstance(value, str) or value.lower() not in ("tcp", "udp", "both"):
        return INVALID
    return (Protocol.TCP, Protocol.UDP) if value.lower() == "both" else (Protocol(value.upper()),)


def _ports_of(value: object) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value) if 1 <= value <= 65535 else INVALID
    match = re.fullmatch(r"([0-9]{1,5})-([0-9]{1,5})", value) if isinstance(value, str) else None
    if not match or "\n" in value:  # type: ignore[operator]
        return INVALID
    low, high = int(match[1]), int(match[2])
    return (low, high) if 1 <= low <= high <= 65535 else INVALID


def _lease_of(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 1 <= value <= 604800 else INVALID
    if value == "permanent":
        return 0
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]+|(?:[0-9]+[smhdw])+", value) or "\n" in value:
        return INVALID
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    seconds = int(value) if value.isascii() and value.isdigit() else 0
    for n, unit in re.findall(r"([0-9]+)([smhdw])", value):
        seconds += int(n) * units[unit]
    return seconds if 1 <= seconds <= 604800 else INVALID


def _client_of(value: object) -> str | None:
    if value == "auto":
        return "auto"
    parts = value.split(".") if isinstance(value, str) and value.isascii() and "\n" not in value else []
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 and str(int(p)) == p for p in parts):
        return INVALID
    return value if value not in ("0.0.0.0", "255.255.255.255") and not 224 <= int(parts[0]) <= 239 else INVALID  # type: ignore[return-value]


@settings(max_examples=YAML_EXAMPLES, derandomize=True, deadline=None)
@given(
    protocol=_protocol_value,
    port=_port_value,
    lease=_lease_value,
    client=_client_value,
    in_defaults=st.booleans(),
)
def test_yaml_features_build_exactly_what_they_say_or_located_problems(
    protocol: tuple[str, object],
    port: tuple[str, object],
    lease: tuple[str, object],
    client: tuple[str, object],
    in_defaults: bool,
) -> None:
    """Block scalars, quoting, tags, anchors and aliases, dates, non-ASCII digits, final newlines:
    a manifest that validates holds exactly the rows its values say; any other gets located problems."""
    (protocol_yaml, protocol_read), (port_yaml, port_read) = protocol, port
    (lease_yaml, lease_read), (client_yaml, client_read) = lease, client
    # The first mapping anchors its protocol and lease; the second takes them by alias (or from defaults).
    head = "apiVersion: portctl/v1\nowner: prop\n"
    if in_defaults:
        head += f"defaults:\n  protocol: &p {protocol_yaml}\n  lease: &l {lease_yaml}\n"
        first = "  - name: first\n"
    else:
        first = f"  - name: first\n    protocol: &p {protocol_yaml}\n    lease: &l {lease_yaml}\n"
    first += f"    external_port: {port_yaml}\n    internal_client: {client_yaml}\n    allow_sensitive: true\n"
    second = "  - name: second\n    external_port: 40000\n    internal_client: 10.0.0.9\n"
    second += "" if in_defaults else "    protocol: *p\n    lease: *l\n"
    text = head + "mappings:\n" + first + second

    protocols, ports = _protocols_of(protocol_read), _ports_of(port_read)
    seconds, address = _lease_of(lease_read), _client_of(client_read)
    started = time.monotonic()
    try:
        m = manifest.parse(text, "m.yaml")
    except ManifestError as exc:
        assert time.monotonic() - started < TIME_BOUND
        assert exc.problems and all(p.file == "m.yaml" and p.line >= 1 for p in exc.problems), exc
        assert INVALID in (protocols, ports, seconds, address), f"refused a valid manifest:\n{text}\n{exc}"
        event("refused")
        return
    assert time.monotonic() - started < TIME_BOUND
    assert protocols and ports and seconds is not None and address, f"accepted an invalid manifest:\n{text}"
    said = {
        (name, MappingKey(p, proto), client_, lease_)
        for name, (low, high), client_ in (("first", ports, address), ("second", (40000, 40000), "10.0.0.9"))
        for proto in protocols
        for p in range(low, high + 1)
        for lease_ in (seconds,)
    }
    built = {(d.name, d.key, d.internal_client, d.lease) for d in m.mappings}
    event("valid")
    assert built == said
    assert all(d.internal_port == d.key.external_port for d in m.mappings)
