"""portctl against real miniupnpd in network namespaces, checked with upnpc and real traffic.

Each test runs on the IGD v2 router and again on the same daemon forced to describe itself as
IGD v1, so both ways of reading the table (GetListOfPortMappings and index iteration) are used.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import write
from tests.routerlab import LAN_IP, Lab
from tests.test_bad_input import BAD_MANIFESTS

pytestmark = pytest.mark.router

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
OWNERS = {  # example file -> the router rows it declares
    "minecraft.yaml": {(25565, "TCP", 25565)},
    "qbittorrent.yaml": {(51413, "TCP", 51413), (51413, "UDP", 51413)},
    "webserver.yaml": {(8080, "TCP", 80)},
    "rdp.yaml": {(3389, "TCP", 3389)},
}
FOREIGN = (6000, "TCP", "Xbox Live (another device)")


def example(name: str) -> str:
    return os.path.join(EXAMPLES, name)


def rows(lab: Lab) -> set[tuple[int, str, int]]:
    return {(port, proto, iport) for port, proto, _client, iport, _desc in lab.table()}


@pytest.fixture
def clean(lab: Lab) -> Lab:
    """The lab's router with an empty table plus one foreign mapping made by another client."""
    lab.empty_table().add_foreign(*FOREIGN)
    return lab


def test_router_is_the_configured_igd_version(lab: Lab) -> None:
    """The lab really offers IGD v2, or v1 when forced, so both table readers are exercised."""
    r = lab.portctl("show", "--json")
    assert r.returncode == 0, r.stderr
    assert f'"igd_version": {1 if lab.igd1 else 2}' in r.stdout


def test_apply_examples_creates_exactly_the_declared_mappings(clean: Lab) -> None:
    """Applying every example makes exactly the declared rows, seen by upnpc, beside the foreign one."""
    for name in OWNERS:
        r = clean.portctl("apply", example(name), "--auto-approve", "--no-color")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
    expected = set().union(*OWNERS.values()) | {(FOREIGN[0], FOREIGN[1], FOREIGN[0])}
    assert rows(clean) == expected
    clients = {client for _p, _pr, client, _ip, _d in clean.table()}
    assert clients == {LAN_IP}


def test_traffic_flows_through_applied_mappings(clean: Lab) -> None:
    """A server on the LAN host answers the internet host through the mapped external port."""
    clean.serve(80)
    clean.serve(25565)
    assert not clean.reaches(8080), "port 8080 must be closed before apply"
    for name in ("webserver.yaml", "minecraft.yaml"):
        assert clean.portctl("apply", example(name), "--auto-approve").returncode == 0
    assert clean.reaches(8080)
    assert clean.reaches(25565)


def test_second_plan_shows_no_changes(clean: Lab) -> None:
    """After apply, plan --detailed-exitcode exits 0 with nothing to add, change or remove."""
    for name in OWNERS:
        assert clean.portctl("apply", example(name), "--auto-approve").returncode == 0
    for name in OWNERS:
        r = clean.portctl("plan", example(name), "--detailed-exitcode", "--no-color")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.rstrip().endswith("Plan: 0 to add, 0 to change, 0 to remove.")


def test_removed_entry_is_deleted_and_stops_forwarding(clean: Lab, tmp_path: str) -> None:
    """A mapping dropped from the manifest is deleted on the next apply, and traffic stops."""
    clean.serve(7001)
    clean.serve(7002)
    path = write(
        tmp_path,
        "apiVersion: portctl/v1\nowner: lab\nmappings:\n"
        "  - {name: one, external_port: 7001}\n  - {name: two, external_port: 7002}\n",
    )
    assert clean.portctl("apply", path, "--auto-approve").returncode == 0
    assert clean.reaches(7001) and clean.reaches(7002)
    write(tmp_path, "apiVersion: portctl/v1\nowner: lab\nmappings:\n  - {name: one, external_port: 7001}\n")
    plan = clean.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert plan.returncode == 2
    assert "Plan: 0 to add, 0 to change, 1 to remove." in plan.stdout
    assert clean.portctl("apply", path, "--auto-approve").returncode == 0
    assert (7002, "TCP", 7002) not in rows(clean)
    assert clean.reaches(7001)
    assert not clean.reaches(7002)
    assert (FOREIGN[0], FOREIGN[1], FOREIGN[0]) in rows(clean)


def test_foreign_mappings_survive_apply_and_destroy(clean: Lab) -> None:
    """Mappings made by another client are still there after every apply and destroy."""
    foreign_before = {r for r in clean.table() if r[0] == FOREIGN[0]}
    for name in OWNERS:
        assert clean.portctl("apply", example(name), "--auto-approve").returncode == 0
    for name in OWNERS:
        r = clean.portctl("destroy", example(name), "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
    assert clean.table() == foreign_before


def test_conflict_with_foreign_mapping_changes_nothing(clean: Lab, tmp_path: str) -> None:
    """A declared port held by a foreign mapping is a conflict: exit 1 and the table as it was."""
    path = write(
        tmp_path,
        f"apiVersion: portctl/v1\nowner: lab\nmappings:\n  - {{name: game, external_port: {FOREIGN[0]}}}\n"
        "  - {name: other, external_port: 7003}\n",
    )
    before = clean.table()
    r = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert r.returncode == 1
    assert "held by a foreign mapping" in r.stdout
    assert "nothing was changed" in r.stderr
    assert clean.table() == before


def test_changed_internal_port_is_updated(clean: Lab, tmp_path: str) -> None:
    """Changing internal_port in the manifest changes the router's row, and traffic follows it."""
    clean.serve(7101)
    clean.serve(7102)
    path = write(
        tmp_path,
        "apiVersion: portctl/v1\nowner: lab\nmappings:\n  - {name: svc, external_port: 7100, internal_port: 7101}\n",
    )
    assert clean.portctl("apply", path, "--auto-approve").returncode == 0
    write(
        tmp_path,
        "apiVersion: portctl/v1\nowner: lab\nmappings:\n  - {name: svc, external_port: 7100, internal_port: 7102}\n",
    )
    r = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (7100, "TCP", 7102) in rows(clean)
    assert clean.reaches(7100)
    assert clean.portctl("plan", path, "--detailed-exitcode").returncode == 0


def test_unreachable_router_is_one_clear_error(clean: Lab) -> None:
    """A router URL nothing answers on gives one message naming the router, exit 1, no traceback."""
    r = clean.portctl(
        "plan",
        example("minecraft.yaml"),
        "--router",
        "http://192.168.77.1:5999/rootDesc.xml",
        "--timeout",
        "2",
        router=False,
    )
    assert r.returncode == 1
    assert "cannot reach router" in r.stderr
    assert "Traceback" not in r.stderr


def test_discovery_finds_the_router_inside_the_namespace(lab: Lab) -> None:
    """SSDP discovery, sent only inside the lab's LAN namespace, finds the router, and plan uses it."""
    r = lab.portctl("discover", "--timeout", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.url in r.stdout
    r = lab.portctl("plan", example("minecraft.yaml"), "--no-color", router=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.url in r.stdout


@pytest.mark.parametrize(("text", "message"), BAD_MANIFESTS[:8])
def test_bad_manifest_leaves_the_real_table_unchanged(clean: Lab, tmp_path: str, text: str, message: str) -> None:
    """A bad manifest is refused with its located message before any request changes the router."""
    before = clean.table()
    r = clean.portctl("apply", write(tmp_path, text), "--auto-approve")
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert clean.table() == before


def test_router_soap_fault_is_named_and_table_unchanged(clean: Lab, tmp_path: str) -> None:
    """miniupnpd refuses a client its permission rules deny; the fault names action and code."""
    path = write(
        tmp_path,
        "apiVersion: portctl/v1\nowner: lab\nmappings:\n"
        "  - {name: elsewhere, external_port: 7200, internal_client: 10.9.9.9}\n",
    )
    before = clean.table()
    r = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert r.returncode == 1
    assert "AddPortMapping failed: " in r.stdout
    assert any(f"AddPortMapping failed: {code} " in r.stdout for code in (606, 718)), r.stdout
    assert "Traceback" not in r.stderr
    assert clean.table() == before
