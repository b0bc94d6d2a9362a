"""The agent over PCP and NAT-PMP, on a virtual clock it shares with a fake router: a restart seen in
the router's epoch is said and healed at once, and leases are renewed at half of what was granted."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.backends.base import Backend
from reconciler.backends.pcp.backend import Mode, PcpBackend
from reconciler.cache import Cache
from reconciler.cli import _status_text
from tests.agenthelp import Clock, Driven, manifest
from tests.test_pcp_backend import HOST, SECRET, FakeClient, FakeRouter

GATEWAY = "192.168.77.1"
# Another application on this host maps its own port with its own nonce: never the agent's to touch.
FOREIGN_AT, FOREIGN = (6, 9999), (19999, b"another-app-nonce", 600)
RESTARTED = "router restarted: 2 owned mappings restored"


@dataclass
class TimedRouter(FakeRouter):
    """The fake router, noting when each mapping (by internal port) was made or renewed."""

    maps: dict[int, list[float]] = field(default_factory=dict)

    def map(
        self, protocol: int, internal: int, external: int, lifetime: int, n: bytes, floor: int = 0
    ) -> tuple[int, int, int]:
        if lifetime:
            self.maps.setdefault(internal, []).append(self.clock())
        return super().map(protocol, internal, external, lifetime, n, floor)


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
    text = _status_text(run.agent.status.to_json())
    assert f"(by its {mode}-epoch: when its mapping state began)" in text and "restarts:  1," in text, text
    assert router.table[FOREIGN_AT] == FOREIGN


def test_a_pass_asks_the_epoch_first_so_a_restart_is_healed_within_one_interval(tmp_path: Any) -> None:
    """With checks between passes rarer than passes, the pass itself sees the restart: its table is
    only what this host recorded, so it asks the router's epoch before planning from it."""
    clock = Clock()
    router = FakeRouter(clock)  # type: ignore[arg-type]
    run = driven(tmp_path, "pcp", router, clock, interval=60, watch=3600)
    run.run_until(lambda: owned(router) == {8080, 8022}, 60, "the first pass")
    run.run_for(100)
    router.restart()
    run.run_until(lambda: owned(router) == {8080, 8022}, 60 * 1.1 + 1, "the owned mappings back")
    assert [e["msg"] for e in run.log_lines()].count(RESTARTED) == 1
    assert run.metric("portctl_router_restarts_total") == 1


@pytest.mark.parametrize("mode", ["pcp", "natpmp"])
@pytest.mark.parametrize(
    ("lease", "ceiling"),
    [("10m", 86400), ("1h", 600)],  # as asked; shortened by the router to 10 minutes
    ids=["granted-as-asked", "granted-shorter"],
)
def test_leases_are_renewed_at_half_of_what_was_granted(tmp_path: Any, mode: Mode, lease: str, ceiling: int) -> None:
    """Each 600 s grant is renewed after 40-50 % of it has gone, whatever the manifest asked for, and the
    agent does not spin on a lease the router shortened; an epoch that keeps pace is never a restart."""
    clock = Clock()
    router = TimedRouter(clock, ceiling=ceiling)  # type: ignore[arg-type]
    run = driven(tmp_path, mode, router, clock, lease=lease, interval=300, watch=15)
    start = clock()
    run.run_for(2400)
    for internal in (8080, 8022):
        times = router.maps[internal]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert times[0] - start < 60 and clock() - times[-1] <= 0.5 * 600, times  # it never lapsed
        assert all(0.4 * 600 <= g <= 0.5 * 600 for g in gaps), gaps
    # A renewal about every 270 s and an ordinary pass every 300 s: about 18 in 40 minutes, not one a second.
    assert run.passes() <= 30, run.passes()
    assert run.metric("portctl_router_restarts_total") == 0


def test_a_grant_kept_at_another_port_is_renewed_before_it_lapses(tmp_path: Any) -> None:
    """next_free over PCP: the router moves web off a held port and the agent keeps the grant there. The
    renewal wake-up follows the grant at the port the router gave, so with an interval twice the lease
    the mapping never lapses."""
    clock = Clock()
    router = TimedRouter(clock)  # type: ignore[arg-type]
    router.held.add((6, 18080))  # someone else's external port: a MAP for it moves to 18081
    path = os.path.join(str(tmp_path), "mappings.yaml")
    with open(path, "w") as f:
        f.write(
            manifest(("web", 18080, 8080), lease="10m", client=HOST).replace(
                "    internal_client:", "    on_conflict: next_free\n    internal_client:"
            )
        )

    def connect(url: str, cache: Cache, **_: Any) -> Backend:
        return PcpBackend(
            GATEWAY, mode="pcp", cache=cache, clock=clock, open_client=lambda: FakeClient(router), secret=SECRET
        ).connect()

    run = Driven(path, f"pcp://{GATEWAY}", clock, connect=connect, settle=0, interval=1200, watch=15)
    start = clock()
    run.run_for(3600)
    assert router.table[(6, 8080)][0] == 18081
    times = router.maps[8080]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] - start < 60 and clock() - times[-1] < 600, times  # it never lapsed
    assert gaps and all(g < 600 for g in gaps), gaps
