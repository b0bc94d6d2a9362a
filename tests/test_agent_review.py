"""What a careful review of the agent found: the router lock on release, the status lock, one answer
while suspended, one vocabulary of reasons, one place for renewal, and a WAN connection that does not
answer. Passes are driven one at a time on a clock the emulated router shares."""

from __future__ import annotations

import fcntl
import io
import json
import os
from typing import Any

import pytest

from reconciler import api, lock, quirks, renewal
from reconciler import manifest as manifest_module
from reconciler.agent import status as st
from reconciler.agent.config import AgentConfig
from reconciler.agent.control import ControlServer
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.agent.source import SourceError, Unsettled, VerificationError
from reconciler.cache import Cache
from reconciler.cli import main
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.errors import RouterError
from tests.agenthelp import ROUTER_TIMEOUT, Driven, get, manifest
from tests.helpers import snapshot

FOREIGN = (3074, "UDP", "127.0.0.9", 3074, "Xbox Live")


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def lock_is_held(udn: str) -> bool:
    """Does some open file description hold the router's lock (this process's agent included)?"""
    fd = os.open(lock.path(Cache.from_env().lock_directory, udn), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_release_on_exit_deletes_only_while_holding_the_router_lock(emulator: EmulatorServer, tmp_path: Any) -> None:
    """Every deletion --release-on-exit makes happens under the router's lock, as a pass's writes do, so a
    portctl apply run by hand never interleaves with it; foreign rows stay byte-identical."""
    emulator.router.add(*FOREIGN)
    path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = Driven(path, emulator, settle=0, release_on_exit=True)
    assert run.agent.reconcile().result == "changed"
    foreign = [r for r in snapshot(emulator) if r[0] == FOREIGN[0]]
    delete = emulator.router._delete
    held: list[bool] = []

    def watched_delete(args: Any, client: str) -> Any:
        held.append(lock_is_held(run.agent.status.router))
        return delete(args, client)

    emulator.router._delete = watched_delete  # type: ignore[method-assign]
    run.agent.stop()
    run.agent.run()  # stopped before it starts: only the shutdown, which releases
    assert held == [True, True]
    assert snapshot(emulator) == foreign


def test_status_is_only_written_while_its_lock_is_held(emulator: EmulatorServer, tmp_path: Any) -> None:
    """Passes that succeed and fail, suspension and resumption write the status only under its lock, as
    the listener's threads read it."""
    unlocked: list[str] = []

    class Watched(st.Status):
        def __setattr__(self, name: str, value: object) -> None:
            if self.__dict__.get("_armed") and not self._lock.locked():
                unlocked.append(name)
            object.__setattr__(self, name, value)

    path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80), lease="1h"))
    run = Driven(path, emulator, settle=0)
    watched = Watched()
    object.__setattr__(watched, "_armed", True)
    run.agent.status = watched
    assert run.agent.reconcile().result == "changed"
    run.agent.suspend()
    run.agent.resume()
    write(path, "owner: [")
    assert run.agent.reconcile().result == "failed"
    run.agent.status.to_json()
    assert unlocked == []


def test_a_suspended_agent_answers_one_way_everywhere(emulator: EmulatorServer, tmp_path: Any) -> None:
    """Suspended while a pass is under way, the agent is not ready on /readyz, in /status and for
    `portctl agent status` (text and JSON), although that pass succeeded."""
    path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80)))
    run = Driven(path, emulator, settle=0)
    emulator.router.on_change.append(lambda count: run.agent.suspend())  # the request lands mid-pass
    assert run.agent.reconcile().result == "changed"
    server = ControlServer(run.agent, "127.0.0.1", 0).start()
    try:
        readyz = get(server.address, "/readyz")
        status = json.loads(get(server.address, "/status")[1])
        text = main(["agent", "status", "--listen", server.address])
        as_json = main(["agent", "status", "--json", "--listen", server.address])
    finally:
        server.stop()
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert run.agent.ready() is False
    assert readyz[0] == 503 and json.loads(readyz[1])["condition"]["reason"] == "Suspended"
    assert (status["suspended"], ready["status"], ready["reason"]) == (True, "False", "Suspended")
    assert (text, as_json) == (1, 1)


def test_every_reason_the_agent_reports_is_from_one_vocabulary(emulator: EmulatorServer, tmp_path: Any) -> None:
    """A conflict with a foreign mapping is reported with the status module's Conflict reason, and the
    source's errors carry reasons from the same vocabulary."""
    emulator.router.add(8080, "TCP", "127.0.0.9", 80, "another app")
    path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = Driven(path, emulator, settle=0)
    outcome = run.agent.reconcile()
    assert (outcome.result, outcome.reason) == ("failed", st.CONFLICT)
    assert run.condition("Ready") == ("False", st.CONFLICT)
    assert {SourceError.reason, VerificationError.reason, Unsettled.reason} <= st.REASONS
    assert st.CONFLICT in st.REASONS


def test_the_pass_the_agent_wakes_for_renews_a_lease_before_a_hand_run_plan_would(
    emulator: EmulatorServer, tmp_path: Any
) -> None:
    """At the moment the agent wakes for a 1 h lease, more than half of it is left: a hand-run plan
    would not renew yet, the agent's pass does. The shares that decide it live in one module."""
    path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80), lease="1h"))
    run = Driven(path, emulator, settle=0, interval=86400, jitter=0)
    first = run.agent.reconcile()
    assert first.wait == pytest.approx(3600 * (1 - renewal.AGENT_WAKE))
    run.clock.advance(first.wait)
    left = emulator.router.remaining(next(iter(emulator.router.rows())))
    backend = api.connect(emulator.url, Cache.from_env(), timeout=ROUTER_TIMEOUT)
    by_hand = api.plan(manifest_module.load(path), api.read(backend))
    renewed = run.agent.reconcile()
    assert renewal.PLAN_BELOW < renewal.AGENT_WAKE < renewal.AGENT_BELOW
    assert left > 3600 * renewal.PLAN_BELOW
    assert by_hand.changes == ()
    assert renewed.changes == ("renewed the lease of 8080/tcp -> 127.0.0.1:80 (web)",)


def test_a_wan_connection_that_does_not_answer_is_not_taken_for_connected() -> None:
    """Of two WAN connections, one whose GetStatusInfo goes unanswered is passed over, even though it
    would report a public address; mappings go on the one that says it is connected."""
    with EmulatorServer(Router(PROFILES["two-wan"])) as server:
        dead = next(r for r in server.controls.values() if r is not server.router)
        dead.connected, dead.external_ip = True, "203.0.113.99"
        for _ in range(4):  # more than any retry makes
            dead.inject("GetStatusInfo", "drop")
        backend = api.connect(server.url, Cache.from_env(), timeout=ROUTER_TIMEOUT)
        assert backend.info.external_ip == PROFILES["two-wan"].external_ip
        assert dead.calls["GetStatusInfo"] >= 1


def test_a_forget_run_beside_the_agent_is_forgotten_by_its_next_pass(tmp_path: Any) -> None:
    """The agent keeps one connection, and with it what the router taught. A `portctl forget` run
    by hand meanwhile must count: the next pass asks the router again instead of planning from the
    lesson the user dropped (and learns it again, as the router still refuses)."""
    with EmulatorServer(Router(PROFILES["permanent-only"])) as server:
        path = write(str(tmp_path / "mappings.yaml"), manifest(("web", 8080, 80), lease="1h"))
        run = Driven(path, server, settle=0)
        refused = run.agent.reconcile()
        assert refused.result == "failed" and "portctl forget permanent-only" in refused.message
        asked = server.router.calls["AddPortMapping"]
        assert asked >= 1
        assert run.agent.reconcile().result == "failed"
        assert server.router.calls["AddPortMapping"] == asked  # planned from the lesson: not asked again

        assert main(["forget", "permanent-only", "--router", server.url]) == 0
        assert run.agent.reconcile().result == "failed"
        assert server.router.calls["AddPortMapping"] > asked  # the router was asked again
        assert quirks.Quirk.PERMANENT_ONLY in Cache.from_env().learned(server.udn).quirks  # and taught it again


def test_the_agent_probes_in_the_order_the_manifest_gives(tmp_path: Any) -> None:
    """router.protocols reaches the agent's connection as it reaches the CLI's: [natpmp] is asked for
    NAT-PMP alone; a manifest without it asks for every protocol in the default order."""
    from reconciler import protocols

    asked: list[tuple[str, ...]] = []

    def connect(url: str | None, cache: Cache, **kw: Any) -> Any:
        asked.append(tuple(kw["order"]))
        raise RouterError("no router here")

    forced = manifest(("web", 8080, 80)).replace("owner: homelab", "owner: homelab\nrouter:\n  protocols: [natpmp]")
    for text in (forced, manifest(("web", 8080, 80))):
        path = write(str(tmp_path / "mappings.yaml"), text)
        agent = Agent(AgentConfig(manifest=path, events=False, settle=0), log=JsonLog(io.StringIO()), connect=connect)
        assert agent.reconcile().result == "failed"
    assert asked == [("natpmp",), protocols.PROTOCOLS]
