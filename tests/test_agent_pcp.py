"""The agent over PCP and NAT-PMP, on a virtual clock it shares with a fake router: a restart seen in
the router's epoch is said and healed at once, and leases are renewed at half of what was granted."""

from __future__ import annotations

import os
from typing import Any

import pytest

from reconciler.backends.base import Backend
from reconciler.backends.pcp.backend import Mode, PcpBackend
from reconciler.cache import Cache
from tests.agenthelp import Clock, Driven, manifest
from tests.test_pcp_backend import HOST, SECRET, FakeClient, FakeRouter

GATEWAY = "192.168.77.1"
# Another application on this host maps its own port with its own nonce: never the agent's to touch.
FOREIGN_AT, FOREIGN = (6, 9999), (19999, b"another-app-nonce", 600)
RESTARTED = "router restarted: 2 owned mappings restored"


def driven(tmp_path: Any, mode: Mode, router: FakeRouter, clock: Clock, lease: str = "1h", **settings: Any) -> Driven:
    """An agent keeping web (18080 -> 8080) and ssh (12222 -> 8022) on `router` over `mode`."""
    path = os.path.join(str(tmp_path), "mappings.yaml")
    with open(path, "w") as f:
        f.write(manifest(("web", 18080, 8080), ("ssh", 12222, 8022), lease=lease, client=HOST))

    def connect(url: str, cache: Cache, **_: Any) -> Backend:
        assert url == f"{mode}://{GATEWAY}"
        return PcpBackend(
            GATEWAY, mode=mode, cache=cache, clock=clock, open_client=lambda: FakeClient(router), secret=SECRET
        ).connect()

    return Driven(path, f"{mode}://{GATEWAY}", clock, connect=connect, settle=0, **settings)


def owned(router: FakeRouter) -> set[int]:
    return {internal for (_, internal) in router.table} & {8080, 8022}


@pytest.mark.parametrize("mode", ["pcp", "natpmp"])
def test_an_epoch_that_went_back_is_a_restart_said_and_healed_at_the_next_check(tmp_path: Any, mode: Mode) -> None:
    """The router restarted empty: the check between passes sees its epoch go back, the owned mappings are
    back at once (not at the next interval), and the restart is logged, counted and a condition."""
    clock = Clock()
    router = FakeRouter(clock)  # type: ignore[arg-type]  # the agent's Clock is the same kind of callable
    run = driven(tmp_path, mode, router, clock, interval=300, watch=15)
    run.run_until(lambda: owned(router) == {8080, 8022}, 60, "the first pass")
    run.run_for(100)
    assert run.metric("portctl_router_restarts_total") == 0
    router.restart()
    router.table[FOREIGN_AT] = FOREIGN
    run.run_until(lambda: owned(router) == {8080, 8022}, 16, "the owned mappings back")
    assert [e["msg"] for e in run.log_lines()].count(RESTARTED) == 1
    assert run.metric("portctl_router_restarts_total") == 1
    assert run.condition("Ready") == ("True", "RouterRestarted")
    boot = run.agent.status.to_json()["routerBoot"]
    assert (boot["source"], boot["restarts"]) == (f"{mode}-epoch", 1), boot
    assert "epoch went from" in boot["lastRestartCause"], boot
    assert router.table[FOREIGN_AT] == FOREIGN
