"""The agent keeps IPv6 pinholes on the emulator's WANIPv6FirewallControl (on ::1) alive on a virtual
clock it shares with the router: it wakes for a pinhole's lease, not only at its interval, and a router
restart that lost the pinholes has them opened again at once, said in the restart's log line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.emulator import EmulatorServer, Router
from tests.agenthelp import Driven

ME = "::1"
PORT = 18800


def manifest(lease: str) -> str:
    return (
        "apiVersion: portctl/v1\nowner: six\nmappings: []\npinholes:\n"
        f"  - {{name: web, internal_client: '{ME}', internal_port: {PORT}, lease: {lease}}}\n"
    )


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(Router(), host=ME) as s:
        yield s


def held(server: EmulatorServer) -> list[float]:
    """The expiry (on the router's clock) of each pinhole the router holds to the declared port."""
    return [p.expires for p in server.router.firewall.rows() if p.internal_port == PORT]


def driven(tmp_path: Path, server: EmulatorServer, lease: str, **settings: object) -> Driven:
    path = os.path.join(tmp_path, "six.yaml")
    Path(path).write_text(manifest(lease))
    return Driven(path, server, wall_too=True, settle=0, **settings)


def test_a_short_pinhole_lease_wakes_the_agent_long_before_its_interval(tmp_path: Path, server: EmulatorServer) -> None:
    """With a 2 min lease and a 1 h interval, each wake-up comes before the pinhole lapses, over several hours."""
    agent = driven(tmp_path, server, "2m", interval=3600, watch=3600, jitter=0)
    start = agent.clock()
    agent.agent.step()  # the first pass opens it
    assert held(server), agent.log_lines()
    while agent.clock() < start + 4 * 3600:
        wake = agent.agent.step()
        (expires,) = held(server)
        assert wake < expires, f"the agent sleeps until {wake - start:g} s, the pinhole lapses at {expires - start:g} s"
        agent.clock.now = max(agent.clock.now, wake)
    assert server.router.firewall.calls.count("AddPinhole") >= 4 * 3600 / 120  # renewed in every lease
    assert agent.errors() == []


def test_a_router_restart_has_the_pinholes_opened_again_at_the_next_check(
    tmp_path: Path, server: EmulatorServer
) -> None:
    """The router restarts empty while the recorded pinhole has most of its lease left: the next check sees
    the restart, the pass opens the pinhole again, and the restart line counts it."""
    agent = driven(tmp_path, server, "1h", interval=3600, watch=30)
    agent.run_until(lambda: bool(held(server)), 60, "the first pass")
    agent.run_for(120)
    server.router.reboot()
    assert held(server) == []
    took = agent.run_until(lambda: bool(held(server)), 60, "the pinhole opened again")
    assert took <= 30
    said = [line["msg"] for line in agent.log_lines() if line["msg"].startswith("router restarted:")]
    assert said == ["router restarted: 0 owned mappings and 1 IPv6 pinhole restored"]
    assert agent.condition("Ready") == ("True", "RouterRestarted")
