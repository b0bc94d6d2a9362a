"""The manifest's policy, sensitive ports, protected mappings, the deletion guards and the router lock.

Every test that writes checks that the foreign mapping on the emulator is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from reconciler import lock, ownership
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from reconciler.emulator.profiles import PROFILES
from reconciler.models import MappingKey, Protocol
from tests.helpers import FOREIGN, owned_ports, portctl, snapshot, write


def manifest(mappings: str, *, policy: str = "", head: str = "") -> str:
    return f"apiVersion: portctl/v1\nowner: pol\n{head}{policy}mappings:\n{mappings}"


@pytest.fixture
def router() -> Iterator[EmulatorServer]:
    with EmulatorServer(Router(igd_version=2)) as server:
        server.router.add(*FOREIGN)
        yield server


def foreign_rows(server: EmulatorServer) -> list[tuple[object, ...]]:
    return [row for row in snapshot(server) if row[0] == FOREIGN[0]]


def apply(capsys: pytest.CaptureFixture[str], server: EmulatorServer, path: str, *extra: str) -> tuple[int, str, str]:
    run = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", *extra)
    return run.code, run.out, run.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            manifest("  - {name: ssh, external_port: 22}\n"),
            "mappings.yaml:4:32: $.mappings[0].external_port: exposes SSH (port 22)",
        ),
        (
            manifest("  - {name: rdp, external_port: 13389, internal_port: 3389}\n"),
            "exposes RDP (port 3389) to the internet; set allow_sensitive: true",
        ),
        (manifest("  - {name: web, external_port: 80}\n"), "exposes privileged port 80"),
        (
            manifest(
                "  - {name: web, external_port: 8080, internal_client: 10.0.0.5}\n",
                policy="policy:\n  allowed_internal_clients: [192.168.1.0/24]\n",
            ),
            "$.mappings[0].internal_client: 10.0.0.5 is outside policy.allowed_internal_clients",
        ),
        (
            manifest(
                "  - {name: game, external_port: 27015-27030}\n",
                policy="policy:\n  allowed_external_ports: [27015-27020]\n",
            ),
            "$.mappings[0].external_port: port 27021 is outside policy.allowed_external_ports",
        ),
        (
            manifest("  - {name: web, external_port: 8080, lease: 2d}\n", policy="policy:\n  max_lease: 1d\n"),
            "$.mappings[0].lease: longer than policy.max_lease (1d)",
        ),
        (
            manifest("  - {name: web, external_port: 8080}\n", policy="policy:\n  max_lease: 1d\n"),
            "no lease given, so permanent, which policy.max_lease (1d) refuses",
        ),
        (
            manifest(
                "  - {name: web, external_port: 8080}\n", policy="policy:\n  allowed_internal_clients: [300.1/8]\n"
            ),
            "'300.1/8' is not an IPv4 network",
        ),
    ],
)
def test_policy_breaches_are_refused_with_file_and_line(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer, text: str, message: str
) -> None:
    """A manifest that breaks its own policy, or exposes a sensitive port unasked, is refused before connecting."""
    before = snapshot(router)
    path = write(tmp_path, text)
    run = portctl(capsys, "validate", path)
    assert run.code == 1 and message in run.err, run.err
    code, _, err = apply(capsys, router, path)
    assert code == 1 and message in err
    assert snapshot(router) == before


def test_sensitive_ports_need_allow_sensitive_and_are_flagged(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """With allow_sensitive the mapping is made, and every plan says what it exposes."""
    path = write(tmp_path, manifest("  - {name: ssh, external_port: 2222, internal_port: 22, allow_sensitive: true}\n"))
    plan = portctl(capsys, "plan", path, "--router", router.url, "--no-color")
    assert "[sensitive: SSH (port 22)]" in plan.out
    doc = json.loads(portctl(capsys, "plan", path, "--router", router.url, "--json").out)
    assert doc["changes"][0]["sensitive"] == "SSH (port 22)"
    assert apply(capsys, router, path)[0] == 0
    assert owned_ports(router) == {2222}
    assert foreign_rows(router) == [FOREIGN]


def test_an_auto_address_outside_the_policy_blocks_the_plan(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """internal_client auto resolves to 127.0.0.1 here, outside the allowed LAN: nothing is written."""
    policy = "policy:\n  allowed_internal_clients: [192.168.0.0/16]\n"
    path = write(tmp_path, manifest("  - {name: web, external_port: 8080}\n", policy=policy))
    plan = portctl(capsys, "plan", path, "--router", router.url, "--no-color")
    assert plan.code == 1
    assert "would forward to 127.0.0.1, outside policy.allowed_internal_clients" in plan.out
    before = snapshot(router)
    code, _, err = apply(capsys, router, path)
    assert code == 1 and "Nothing was changed" in err
    assert snapshot(router) == before


def test_next_free_never_moves_outside_the_allowed_ports(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """The foreign mapping holds 9999; next_free would take 10000, which the policy does not allow."""
    policy = "policy:\n  allowed_external_ports: [9999]\n"
    path = write(tmp_path, manifest("  - {name: web, external_port: 9999, on_conflict: next_free}\n", policy=policy))
    code, out, err = apply(capsys, router, path)
    assert code == 1
    assert "web 10000/tcp is outside policy.allowed_external_ports" in out + err
    assert owned_ports(router) == set()
    assert foreign_rows(router) == [FOREIGN]


def test_protected_mappings_survive_prune_and_destroy_until_unprotected(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """protect is written onto the router, so it holds even after the mapping leaves the manifest."""
    both = "  - {name: vpn, external_port: 51820, protocol: udp, protect: true}\n  - {name: web, external_port: 8080}\n"
    path = write(tmp_path, manifest(both))
    assert apply(capsys, router, path)[0] == 0
    vpn = next(e for e in router.router.rows() if e.external_port == 51820)
    assert ownership.is_protected(vpn.description)
    assert ownership.claim("pol", MappingKey(51820, Protocol.UDP), vpn.description) == ownership.Claim("vpn", True)
    # Dropped from the manifest: prune removes web, keeps vpn.
    write(tmp_path, manifest("  - {name: other, external_port: 8081}\n"))
    code, out, _ = apply(capsys, router, path, "--no-color")
    assert code == 0 and "kept because it is protected" in out
    assert owned_ports(router) == {51820, 8081}
    assert portctl(capsys, "destroy", path, "--router", router.url, "--auto-approve").code == 0
    assert owned_ports(router) == {51820}
    # Unprotected by the manifest, then it can go.
    write(tmp_path, manifest("  - {name: vpn, external_port: 51820, protocol: udp, protect: false}\n"))
    assert apply(capsys, router, path)[0] == 0
    assert portctl(capsys, "destroy", path, "--router", router.url, "--auto-approve").code == 0
    assert owned_ports(router) == set()
    assert foreign_rows(router) == [FOREIGN]


def test_max_deletions_and_the_empty_manifest_guard(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """Deleting more than --max-deletions, or everything because the manifest came out empty, is refused."""
    path = write(tmp_path, manifest("  - {name: games, external_port: 27015-27017}\n"))
    assert apply(capsys, router, path)[0] == 0
    write(tmp_path, manifest("  - {name: games, external_port: 27015}\n"))
    code, out, err = apply(capsys, router, path, "--max-deletions", "1")
    assert code == 1 and "the plan deletes 2 mappings, more than --max-deletions 1" in out + err
    assert owned_ports(router) == {27015, 27016, 27017}
    write(tmp_path, manifest(" []\n").replace("mappings:\n []", "mappings: []"))
    code, out, err = apply(capsys, router, path)
    assert code == 1 and "pass --allow-empty if that is meant" in out + err
    assert owned_ports(router) == {27015, 27016, 27017}
    assert apply(capsys, router, path, "--allow-empty")[0] == 0
    assert owned_ports(router) == set()
    assert foreign_rows(router) == [FOREIGN]


def test_apply_waits_for_the_router_lock_and_times_out(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """While another process holds the router's lock, apply waits --lock-timeout, then writes nothing."""
    path = write(tmp_path, manifest("  - {name: web, external_port: 8080}\n"))
    with lock.held(Cache.from_env().lock_directory, router.udn, 1):
        code, _, err = apply(capsys, router, path, "--lock-timeout", "0.3")
    assert code == 1 and "another portctl is applying to router" in err and "--lock-timeout" in err
    assert owned_ports(router) == set()
    assert apply(capsys, router, path)[0] == 0  # released with the block


def test_two_processes_applying_at_once_do_not_interleave(tmp_path: str) -> None:
    """Two owners apply 15 mappings each to one slow router at the same moment: one's writes all come first."""
    with EmulatorServer(Router(replace(PROFILES["slow"], delay=0.03))) as server:
        server.router.add(*FOREIGN)
        env = {**os.environ, "PORTCTL_CACHE_DIR": str(tmp_path)}
        procs = []
        for owner, port in (("alpha", 20000), ("beta", 21000)):
            text = (
                f"apiVersion: portctl/v1\nowner: {owner}\nmappings:\n  - {{name: s, external_port: {port}-{port + 14}}}"
            )
            path = write(tmp_path, text, f"{owner}.yaml")
            cmd = [sys.executable, "-m", "reconciler", "apply", path, "--router", server.url, "--auto-approve"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        # Each owner writes its own range of ports: the port says whose write it was.
        owners = [int(args["NewExternalPort"]) // 1000 for action, args in server.router.journal]
        assert len(owners) == 30
        assert owners[:15] == [owners[0]] * 15 and owners[15:] == [owners[15]] * 15 and owners[0] != owners[15]
        assert foreign_rows(server) == [FOREIGN]
