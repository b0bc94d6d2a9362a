"""Pinholes planned and applied by portctl on the emulator's WANIPv6FirewallControl on ::1: plan, apply,
plan with no changes, renew at half the lease, prune, destroy; a restarted portctl finds its own
again; a router without the service is refused before any write; another app's pinhole is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from reconciler import api, manifest
from reconciler.apply import apply
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.models import PinholeAction, Plan
from reconciler.pinholestore import FILE
from tests.helpers import portctl, snapshot, write

ME = "::1"
MANIFEST = """\
apiVersion: portctl/v1
owner: six
mappings: []
pinholes:
  - name: web
    internal_port: 18800
  - name: game
    internal_client: '0:0::1'
    internal_port: 27015
    protocol: udp
    lease: 10m
"""
ONLY_WEB = MANIFEST.split("  - name: game")[0]


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(Router(), host=ME) as s:
        # Another app on this host holds a pinhole of its own: it must stay exactly as it is.
        s.router.firewall.call(
            "AddPinhole",
            {
                "RemoteHost": "",
                "RemotePort": "0",
                "InternalClient": ME,
                "InternalPort": "9000",
                "Protocol": "6",
                "LeaseTime": "86400",
            },
            ME,
        )
        yield s


def pinholes(server: EmulatorServer) -> list[tuple[int, str, int, int]]:
    return [(p.unique_id, p.internal_client, p.internal_port, p.protocol) for p in server.router.firewall.rows()]


def foreign(server: EmulatorServer) -> list[tuple[object, ...]]:
    """The other app's pinhole, every field but its expiry (which the router counts down)."""
    return [astuple(p)[:-2] for p in server.router.firewall.rows() if p.internal_port == 9000]


def cli(capsys: pytest.CaptureFixture[str], server: EmulatorServer, path: str, *args: str) -> tuple[int, str]:
    run = portctl(capsys, *args[:1], path, *args[1:], "--router", server.url)
    return run.code, run.out + run.err


def test_plan_apply_plan_then_prune_and_destroy(
    tmp_path: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan lists the pinholes; apply opens exactly them; a second plan has no changes; a pinhole
    removed from the manifest is closed; destroy closes the rest; the foreign pinhole never changes."""
    path = write(tmp_path, MANIFEST)
    before = foreign(server)
    code, out = cli(capsys, server, path, "plan")
    assert code == 0, out
    assert "+   web              [::1]:18800/tcp  open, lease 1h (declared)" in out
    assert "+   game             [::1]:27015/udp  open, lease 10m (declared)" in out
    assert "Pinholes: 2 to open, 0 to renew, 0 to close." in out
    assert len(pinholes(server)) == 1  # planning wrote nothing

    code, out = cli(capsys, server, path, "apply", "--auto-approve")
    assert code == 0, out
    assert sorted(p[1:] for p in pinholes(server)) == [(ME, 9000, 6), (ME, 18800, 6), (ME, 27015, 17)]

    code, out = cli(capsys, server, path, "plan", "--detailed-exitcode")
    assert code == 0, out
    assert "No changes" in out

    write(tmp_path, ONLY_WEB)
    code, out = cli(capsys, server, path, "apply", "--auto-approve")
    assert code == 0, out
    assert "-   game             [::1]:27015/udp  close UniqueID" in out
    assert sorted(p[1:] for p in pinholes(server)) == [(ME, 9000, 6), (ME, 18800, 6)]

    code, out = cli(capsys, server, path, "destroy", "--auto-approve")
    assert code == 0, out
    assert [p[1:] for p in pinholes(server)] == [(ME, 9000, 6)]
    assert foreign(server) == before


def test_show_lists_the_recorded_pinholes_with_their_remaining_lease(
    tmp_path: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """show names each pinhole the owner holds, its lease, the time left and the router's UniqueID."""
    path = write(tmp_path, ONLY_WEB)
    assert cli(capsys, server, path, "apply", "--auto-approve")[0] == 0
    code, out = cli(capsys, server, path, "show")
    assert code == 0, out
    unique_id = next(p[0] for p in pinholes(server) if p[2] == 18800)
    line = next(line for line in out.splitlines() if "[::1]:18800/tcp" in line)
    assert line.startswith("  web") and "lease 1h, " in line and line.endswith(f"left  UniqueID {unique_id}")


def test_a_restarted_portctl_finds_its_pinholes_without_duplicates(
    tmp_path: Path, router_cache: str, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new process with the same cache plans no changes; with the inventory lost, it opens the same
    pinholes again and the router answers their UniqueIDs: still one pinhole each."""
    path = write(tmp_path, MANIFEST)
    assert cli(capsys, server, path, "apply", "--auto-approve")[0] == 0
    opened = sorted(pinholes(server))

    def portctl_process(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "reconciler", args[0], path, *args[1:], "--router", server.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    again = portctl_process("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout

    os.remove(os.path.join(router_cache, FILE))
    reopened = portctl_process("apply", "--auto-approve")
    assert reopened.returncode == 0, reopened.stdout + reopened.stderr
    assert "Pinholes: 2 to open" in reopened.stdout
    assert sorted(pinholes(server)) == opened
    assert portctl_process("plan", "--detailed-exitcode").returncode == 0


def test_a_pinhole_is_renewed_at_half_its_lease(tmp_path: Path, server: EmulatorServer) -> None:
    """Past half the lease the plan renews it with UpdatePinhole, and the record's expiry moves on."""
    cache = Cache(os.path.join(tmp_path, "cache"))
    m = manifest.parse(ONLY_WEB, "m.yaml")
    start = 1_000_000.0

    def planned(now: float) -> tuple[api.Facts, Plan]:
        facts = api.read(backend, cache, m)
        return facts, api.plan(m, facts, clock=lambda: now)

    backend = api.connect(server.url, cache)
    facts, plan = planned(start)
    assert apply(plan, backend, clock=lambda: start, pinholes=facts.pinholes).ok
    assert planned(start + 1700)[1].pinholes == ()
    facts, plan = planned(start + 1900)
    assert [(c.action, c.reason) for c in plan.pinholes] == [(PinholeAction.RENEW, "half its lease has passed")]
    report = apply(plan, backend, clock=lambda: start + 1900, pinholes=facts.pinholes)
    assert report.ok
    # Renewed by adding the identical pinhole again: the router extends it under the same UniqueID.
    assert server.router.firewall.calls[-1] == "AddPinhole"
    assert [r.unique_id for r in report.pinholes] == [h.unique_id for h in facts.pinholes.held]
    assert facts.pinholes is not None
    assert [h.expires for h in facts.pinholes.store.held("six")] == [start + 1900 + 3600]


def test_a_router_without_the_pinhole_service_is_refused_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the no-pinholes profile plan and apply say pinholes cannot be opened there, exit 1, and write nothing."""
    text = MANIFEST.replace(
        "mappings: []", "mappings:\n  - {name: www, external_port: 8080, internal_client: 127.0.0.1}"
    )
    path = write(tmp_path, text)
    with EmulatorServer(Router(PROFILES["no-pinholes"]), host=ME) as server:
        table = snapshot(server)
        for args in (("plan",), ("apply", "--auto-approve")):
            code, out = cli(capsys, server, path, *args)
            assert code == 1, out
            assert "pinholes cannot be opened on this router" in out
            assert "WANIPv6FirewallControl" in out
        assert snapshot(server) == table
        assert "AddPinhole" not in server.router.firewall.calls
        assert server.router.firewall.rows() == []


def test_the_agent_opens_renews_and_closes_pinholes(tmp_path: Path, server: EmulatorServer) -> None:
    """The agent's pass covers pinholes as `apply` does: opened on the first pass, renewed once half the
    lease has passed (on the agent's clock), closed when dropped from the manifest with prune; the
    other app's pinhole stays exactly as it was."""
    import io

    from reconciler.agent.config import AgentConfig
    from reconciler.agent.controller import Agent
    from reconciler.agent.logs import JsonLog
    from tests.agenthelp import Clock

    path = write(str(tmp_path), ONLY_WEB.replace("mappings: []", "prune: true\nmappings: []"))
    wall = Clock()
    wall.now = 1_000_000.0
    server.router.use_clock(wall)  # the router's uptime moves with the agent's clock: no restart in between
    logs = io.StringIO()
    config = AgentConfig(manifest=path, router=server.url, events=False, settle=0, timeout=30)
    agent = Agent(config, log=JsonLog(logs), clock=wall, wall=wall, cache=Cache(os.path.join(tmp_path, "cache")))
    theirs = foreign(server)
    assert agent.reconcile().result == "changed"
    assert [p[2] for p in pinholes(server) if p[2] != 9000] == [18800]
    wall.advance(1900)  # past half of the 1 h lease
    assert agent.reconcile().result == "changed"
    assert server.router.firewall.calls[-1] == "AddPinhole"
    Path(path).write_text("apiVersion: portctl/v1\nowner: six\nprune: true\nmappings: []\n")
    assert agent.reconcile().result == "changed"
    assert [p[2] for p in pinholes(server)] == [9000] and foreign(server) == theirs
    said = [line for line in logs.getvalue().splitlines() if "IPv6 pinhole web" in line]
    assert [w for w in ("open", "renew", "close") if any(f'"{w} IPv6 pinhole web' in s for s in said)] == [
        "open",
        "renew",
        "close",
    ]


def app_pinhole(server: EmulatorServer, port: int) -> None:
    """Another app on this host opens a pinhole of its own."""
    args = {"RemoteHost": "", "RemotePort": "0", "InternalClient": ME, "InternalPort": str(port), "Protocol": "6"}
    server.router.firewall.call("AddPinhole", {**args, "LeaseTime": "86400"}, ME)


def test_a_recorded_unique_id_never_reaches_another_apps_pinhole_after_a_restart(
    tmp_path: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The router restarted and numbers pinholes from 1 again; another app on this host now holds the id
    recorded for ours. Dropping ours from the manifest closes ours alone: the app's pinholes stay."""
    path = write(tmp_path, ONLY_WEB.replace("mappings: []", "prune: true\nmappings: []"))
    assert cli(capsys, server, path, "apply", "--auto-approve")[0] == 0
    ours = next(p[0] for p in pinholes(server) if p[2] == 18800)
    server.router.reboot()
    for port in range(9000, 9000 + ours):  # the app's pinholes take ids 1..ours
        app_pinhole(server, port)
    theirs = sorted(p for p in pinholes(server))
    assert ours in [p[0] for p in theirs]
    write(tmp_path, "apiVersion: portctl/v1\nowner: six\nprune: true\nmappings: []\n")
    code, out = cli(capsys, server, path, "apply", "--auto-approve")
    assert code == 0, out
    assert sorted(pinholes(server)) == theirs


def test_a_pinhole_two_owners_hold_is_not_closed_by_one(
    tmp_path: Path, server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two owners on this host declare the same pinhole: the router holds one, under one UniqueID. One
    owner dropping it only gives up its record; the other's pinhole stays open, its plan empty."""
    a = write(tmp_path, ONLY_WEB.replace("mappings: []", "prune: true\nmappings: []"), "a.yaml")
    b = write(tmp_path, ONLY_WEB.replace("owner: six", "owner: seven"), "b.yaml")
    assert cli(capsys, server, a, "apply", "--auto-approve")[0] == 0
    assert cli(capsys, server, b, "apply", "--auto-approve")[0] == 0
    shared = [p for p in pinholes(server) if p[2] == 18800]
    assert len(shared) == 1
    write(tmp_path, "apiVersion: portctl/v1\nowner: six\nprune: true\nmappings: []\n", "a.yaml")
    assert cli(capsys, server, a, "apply", "--auto-approve")[0] == 0
    assert [p for p in pinholes(server) if p[2] == 18800] == shared
    code, out = cli(capsys, server, b, "plan", "--detailed-exitcode")
    assert code == 0 and "No changes" in out, out
