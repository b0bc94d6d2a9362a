"""Property tests (hypothesis): manifest parsing never fails other than with located problems, and
for any declared set against any router table, applying the plan on the emulator leaves exactly the
declared owned rows and every foreign row as it was.

The example counts are fixed (derandomize=True, so CI runs the same cases every time) and are the
figures README gives.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import api, manifest, ownership
from reconciler.apply import apply
from reconciler.backends.upnp import UpnpBackend
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
    backend = UpnpBackend(server.url)
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
