"""The agent's event subscription and restart detection: a router that restarted forgets its
subscribers, and the agent must notice and subscribe again. Time is an injected clock."""

from __future__ import annotations

import io
from typing import Any

import pytest

from reconciler import api
from reconciler.agent.config import AgentConfig
from reconciler.agent.events import Events
from reconciler.agent.logs import JsonLog
from reconciler.agent.watch import Sample
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer
from tests.agenthelp import ROUTER_TIMEOUT, Clock


@pytest.mark.parametrize(
    ("old", "new", "restarted"),
    [
        # (uptime, asked at, answered at) before and after
        ((100, 0.0, 0.1), (115, 15.0, 15.1), False),  # 15 s later, 15 s more uptime
        ((100, 0.0, 0.1), (10, 15.0, 15.1), True),  # uptime went back
        ((5, 0.0, 0.1), (11, 15.0, 15.1), True),  # a quick restart: more uptime than before, yet rebooted
        ((100, 0.0, 0.1), (114, 15.0, 15.1), False),  # one second off: the uptime counts whole seconds
        ((100, 0.0, 30.0), (130, 30.0, 30.1), False),  # a slow answer: read any time in those 30 s
        ((None, 0.0, 0.1), (10, 15.0, 15.1), False),  # no uptime known: nothing to compare
    ],
)
def test_a_restart_is_a_boot_moment_that_moved_forward(
    old: tuple[int | None, float, float], new: tuple[int | None, float, float], restarted: bool
) -> None:
    """Only a boot later than the last reading allows counts as a restart, however the uptime compares."""
    before = Sample(*old, address="203.0.113.7")
    after = Sample(*new, address="203.0.113.7")
    assert after.booted_after(before) is restarted


def test_a_subscription_the_router_forgot_is_made_again_and_followed_by_a_reconcile(
    emulator: EmulatorServer,
) -> None:
    """Renewal refused with 412 after a restart: a new SID at once, a reconcile asked for, and the
    status says live again with a fresh sid_age."""
    clock = Clock()
    asked: list[int] = []
    config = AgentConfig(manifest="unused.yaml", router=emulator.url, timeout=ROUTER_TIMEOUT)
    events = Events(config, JsonLog(io.StringIO()), lambda: asked.append(1), lambda: None, clock)
    events.attach(api.connect(emulator.url, Cache.from_env(), timeout=ROUTER_TIMEOUT))
    try:
        events.tend()
        first = events.sid
        assert events.to_json()["live"] is True and first
        clock.now += 100
        assert events.to_json()["sid_age"] == 100

        emulator.reboot()  # the router forgets every subscriber
        clock.now = events.next_renewal
        events.tend()
        assert events.to_json()["live"] is False
        assert asked == [1]
        events.tend()
        status: dict[str, Any] = events.to_json()
    finally:
        events.close()
    assert status["live"] is True and events.sid != first
    assert status["sid_age"] == 0
    assert status["lastRenewal"].endswith("Z")
    assert asked == [1, 1]  # and once more after subscribing: events were missed meanwhile


def test_a_subscription_that_could_not_be_renewed_is_retried_soon_not_after_minutes(
    emulator: EmulatorServer,
) -> None:
    """A router that does not answer SUBSCRIBE (restarting) is asked again within seconds."""
    clock = Clock()
    config = AgentConfig(manifest="unused.yaml", router=emulator.url, timeout=ROUTER_TIMEOUT)
    events = Events(config, JsonLog(io.StringIO()), lambda: None, lambda: None, clock)
    events.attach(api.connect(emulator.url, Cache.from_env(), timeout=ROUTER_TIMEOUT))
    url = events.url
    try:
        events.url = "http://127.0.0.1:9/evt/IPConn"  # nothing listens there: as a router mid-restart
        events.tend()
        assert not events.sid
        assert events.next_due - clock.now <= 5
        events.url = url
        clock.now = events.next_due
        events.tend()
        subscribed = bool(events.sid)
    finally:
        events.close()
    assert subscribed
