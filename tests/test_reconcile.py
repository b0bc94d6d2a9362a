"""plan and apply behaviour on the emulator: ownership, conflicts, leases, saved plans, output."""

from __future__ import annotations

import json

import pytest

from reconciler import ownership
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from reconciler.models import MappingKey, Protocol
from tests.helpers import MANIFEST, portctl, snapshot, write


def apply(capsys: pytest.CaptureFixture[str], path: str, server: EmulatorServer, *extra: str) -> int:
    return portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", *extra).code


@pytest.mark.parametrize("version", [1, 2])
def test_apply_converges_and_second_plan_is_empty(
    tmp_path: str, capsys: pytest.CaptureFixture[str], version: int
) -> None:
    """On IGD v1 and v2, apply makes the declared rows and a second plan has nothing to do."""
    with EmulatorServer(Router(igd_version=version)) as server:
        path = write(tmp_path, MANIFEST)
        assert apply(capsys, path, server) == 0
        assert {(p, proto, port) for p, proto, _c, port, _d in snapshot(server)} == {
            (8080, "TCP", 80),
            (27015, "TCP", 27015),
            (27016, "TCP", 27016),
            (27015, "UDP", 27015),
            (27016, "UDP", 27016),
        }
        run = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode")
        assert run.code == 0
        assert run.out.rstrip().endswith("Plan: 0 to add, 0 to change, 0 to remove.")
        listing = server.router.calls["GetListOfPortMappings"]
        assert (listing > 0) == (version == 2)


def test_detailed_exitcode_agrees_with_summary(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """With changes pending, plan --detailed-exitcode exits 2 and the summary counts them; plain plan exits 0."""
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode")
    assert run.code == 2
    assert "Plan: 5 to add, 0 to change, 0 to remove." in run.out
    assert portctl(capsys, "plan", path, "--router", emulator.url).code == 0
    assert snapshot(emulator) == []


def test_foreign_and_other_owner_untouched_by_apply_and_destroy(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A device's mapping and another owner's mapping survive apply, prune and destroy."""
    emulator.router.add(3074, "UDP", "192.168.1.60", 3074, "Xbox")
    other = ownership.describe("someone-else", MappingKey(9999, Protocol.TCP), "theirs")
    emulator.router.add(9999, "TCP", "127.0.0.1", 9999, other)
    path = write(tmp_path, MANIFEST)
    assert apply(capsys, path, emulator) == 0
    assert portctl(capsys, "destroy", path, "--router", emulator.url, "--auto-approve").code == 0
    assert snapshot(emulator) == [(3074, "UDP", "192.168.1.60", 3074, "Xbox"), (9999, "TCP", "127.0.0.1", 9999, other)]


def test_copied_tag_on_another_port_is_foreign(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """Our tag copied onto a different port does not make that mapping ours: it is not pruned."""
    copied = ownership.describe("test", MappingKey(8080, Protocol.TCP), "web")
    emulator.router.add(8081, "TCP", "127.0.0.1", 80, copied)
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url, "--json")
    plan = json.loads(run.out)
    assert [m["key"]["external_port"] for m in plan["foreign"]] == [8081]
    assert plan["summary"]["remove"] == 0


def test_conflict_blocks_every_write(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """on_conflict fail: a foreign mapping on a declared port is a conflict; plan and apply exit 1, nothing written."""
    emulator.router.add(8080, "TCP", "192.168.1.70", 8080, "camera")
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--no-color")
    assert run.code == 1
    assert "! web" in run.out and "held by a foreign mapping" in run.out
    assert run.out.rstrip().endswith("Plan: 4 to add, 0 to change, 0 to remove, 1 conflict.")
    assert apply(capsys, path, emulator) == 1
    assert snapshot(emulator) == [(8080, "TCP", "192.168.1.70", 8080, "camera")]


def test_takeover_replaces_the_foreign_mapping(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """on_conflict takeover deletes the foreign mapping and adds ours in its place."""
    emulator.router.add(8080, "TCP", "127.0.0.1", 8080, "old thing")
    path = write(tmp_path, MANIFEST.replace("description: nginx", "description: nginx\n    on_conflict: takeover"))
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0
    assert "takeover of foreign mapping 'old thing'" in run.out
    row = next(r for r in snapshot(emulator) if r[0] == 8080)
    assert row[3] == 80 and ownership.is_owned("test", MappingKey(8080, Protocol.TCP), str(row[4]))


def test_next_free_moves_both_protocols_together_and_stays(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """next_free picks the first port free for every protocol of the mapping, and keeps it on later plans."""
    emulator.router.add(51413, "UDP", "192.168.1.80", 51413, "other torrent client")
    text = (
        "apiVersion: portctl/v1\nowner: t\nmappings:\n  - name: qbt\n    external_port: 51413\n"
        "    protocol: both\n    internal_client: 127.0.0.1\n    on_conflict: next_free\n"
    )
    path = write(tmp_path, text)
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0
    assert "51413 is taken; using 51414 (next_free)" in run.out
    assert {(r[0], r[1]) for r in snapshot(emulator)} == {(51413, "UDP"), (51414, "TCP"), (51414, "UDP")}
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode").code == 0


def test_lease_past_half_is_renewed(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A finite lease with less than half its time left is planned as a renewal, and apply renews it."""
    now = [1000.0]
    with EmulatorServer(Router(clock=lambda: now[0])) as server:
        path = write(
            tmp_path,
            "apiVersion: portctl/v1\nowner: t\nmappings:\n"
            "  - {name: rdp, external_port: 3389, lease: 2h, internal_client: 127.0.0.1, allow_sensitive: true}\n",
        )
        assert apply(capsys, path, server) == 0
        now[0] += 3000  # 70 minutes left of 2 hours: not yet due
        assert portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode").code == 0
        now[0] += 1000  # 53 minutes left: due
        run = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
        assert run.code == 2
        assert "renew (lease has 53m20s left of 2h)" in run.out
        assert apply(capsys, path, server) == 0
        assert server.router.remaining(server.router.rows()[0]) == 7200


def test_changed_description_replaces_and_converges(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A new description needs delete then add; the plan shows the field's before and after."""
    path = write(tmp_path, MANIFEST)
    assert apply(capsys, path, emulator) == 0
    write(tmp_path, MANIFEST.replace("nginx", "caddy"))
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--json")
    change = json.loads(run.out)["changes"][0]
    assert change["replace"] is True
    assert change["fields"][0]["field"] == "description"
    assert change["fields"][0]["after"].endswith("web caddy")
    assert apply(capsys, path, emulator) == 0
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode").code == 0


def test_prune_off_keeps_undeclared(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """With prune: false, owned mappings no longer declared are listed as kept, not removed."""
    path = write(tmp_path, MANIFEST)
    assert apply(capsys, path, emulator) == 0
    write(tmp_path, "apiVersion: portctl/v1\nowner: test\nprune: false\nmappings: []\n")
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode", "--no-color")
    assert run.code == 0
    assert "kept because prune is off" in run.out
    assert len(snapshot(emulator)) == 5


def test_saved_plan_applies_and_stale_plan_is_refused(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A saved plan applies as approved; once the table has moved on, it is refused naming the entry."""
    path = write(tmp_path, MANIFEST)
    saved = f"{tmp_path}/plan.json"
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--out", saved).code == 0
    assert portctl(capsys, "apply", saved, "--router", emulator.url).code == 0
    assert len(snapshot(emulator)) == 5
    write(tmp_path, MANIFEST.replace("nginx", "caddy"))
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--out", saved).code == 0
    emulator.router.add(4000, "TCP", "192.168.1.9", 4000, "arrived meanwhile")
    before = snapshot(emulator)
    run = portctl(capsys, "apply", saved, "--router", emulator.url)
    assert run.code == 1
    assert "the router's table changed since the plan was made" in run.err
    assert "4000/tcp: was absent, now 192.168.1.9:4000 'arrived meanwhile'" in run.err
    assert snapshot(emulator) == before


def test_json_plan_document(tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer) -> None:
    """plan --json is one document with the router, changes, foreign mappings, conflicts and summary."""
    emulator.router.add(3074, "UDP", "192.168.1.60", 3074, "Xbox")
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url, "--json")
    doc = json.loads(run.out)
    assert doc["format_version"] == 2 and doc["kind"] == "plan"
    assert doc["router"]["udn"] == emulator.udn
    assert doc["router"]["igd_version"] == 2
    assert doc["router"]["service_type"] == "urn:schemas-upnp-org:service:WANIPConnection:2"
    assert doc["router"]["external_ip"] == "203.0.113.7"
    assert doc["summary"] == {"add": 5, "change": 0, "remove": 0, "conflict": 0}
    first = doc["changes"][0]
    assert (first["action"], first["name"], first["key"]) == ("add", "web", {"external_port": 8080, "protocol": "TCP"})
    assert first["before"] is None and first["after"]["internal_port"] == 80
    assert [m["description"] for m in doc["foreign"]] == ["Xbox"]


def test_init_writes_a_valid_starter_with_schema_modeline(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """init writes a manifest that validates, whose first line points editors at the schema; never overwrites."""
    path = f"{tmp_path}/m.yaml"
    assert portctl(capsys, "init", path).code == 0
    with open(path) as f:
        assert f.readline().startswith("# yaml-language-server: $schema=")
    assert portctl(capsys, "validate", path).code == 0
    assert portctl(capsys, "init", path).code == 1


def test_port_taken_after_the_plan_is_left_alone(emulator: EmulatorServer) -> None:
    """A mapping that appears on a planned port between plan and apply is neither overwritten nor deleted."""
    from reconciler import api, manifest
    from reconciler.apply import apply as apply_plan

    m = manifest.parse(MANIFEST, "m.yaml")
    backend = api.connect(emulator.url, Cache.from_env())
    plan = api.plan(m, api.read(backend))
    # Another app on this very host takes the port; AddPortMapping from us would overwrite it silently.
    emulator.router.add(8080, "TCP", "127.0.0.1", 8081, "another app")
    report = apply_plan(plan, backend)
    failed = {r.change.key: r.error for r in report.failed}
    assert list(failed) == [MappingKey(8080, Protocol.TCP)]
    error = failed[MappingKey(8080, Protocol.TCP)]
    assert "taken: another mapping now holds the port (127.0.0.1:8081 'another app' took it after the plan" in error
    assert (8080, "TCP", "127.0.0.1", 8081, "another app") in snapshot(emulator)
