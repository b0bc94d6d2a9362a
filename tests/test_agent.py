"""The agent against the emulator: the pull loop, drift, events, reboots, leases, control and observability.

Most tests turn the agent's loop themselves on a virtual clock the emulated router shares
(`Driven`): "within one interval" is a statement about that clock, so a busy machine cannot
change the outcome. Tests of the control API and of signals run the loop on its thread and wait on
conditions with generous deadlines; their clock does not move, so nothing falls due by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from reconciler import api
from reconciler.agent.config import AgentConfig
from reconciler.agent.control import ControlServer, call
from reconciler.emulator import EmulatorServer, Router
from reconciler.emulator.ssdp import SsdpResponder
from reconciler.errors import PortctlError
from reconciler.models import MappingKey, Protocol
from reconciler.ownership import is_owned
from tests.agenthelp import DEADLINE, AgentRun, Clock, Driven, GitRepo, get, manifest
from tests.helpers import billion_laughs, snapshot
from tests.routerlab import wait_for

OK = ("True", "ReconciliationSucceeded")


@pytest.fixture
def repo(tmp_path: Any) -> GitRepo:
    return GitRepo(str(tmp_path / "homelab"))


def config(repo: GitRepo, router: EmulatorServer, tmp_path: Any, **kw: Any) -> AgentConfig:
    settings: dict[str, Any] = {"interval": 2, "watch": 1, "timeout": 30.0}
    settings.update(kw)
    return AgentConfig(repo=repo.path, router=router.url, workdir=str(tmp_path / "checkout"), **settings)


def driven(repo: GitRepo, router: EmulatorServer, tmp_path: Any, **kw: Any) -> Driven:
    """An agent following `repo`, its loop turned by the test on a clock it shares with `router`."""
    settings: dict[str, Any] = {"interval": 2, "watch": 1}
    settings.update(kw)
    return Driven(None, router, repo=repo.path, workdir=str(tmp_path / "checkout"), **settings)


def ports(server: EmulatorServer) -> set[int]:
    return {e.external_port for e in server.router.rows()}


def owned(server: EmulatorServer) -> set[int]:
    return {
        e.external_port
        for e in server.router.rows()
        if is_owned("homelab", MappingKey(e.external_port, Protocol(e.protocol)), e.description)
    }


def test_a_commit_is_applied_within_one_interval(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """A commit adding a mapping reaches the router within one interval, and the status names its revision."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    assert ports(emulator) == {8080}
    commit = repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    interval = run.agent.config.interval * (1 + run.agent.config.jitter)
    took = run.run_until(lambda: 2222 in ports(emulator), interval, "the new mapping")
    status = run.agent.status.to_json()
    assert 0 < took <= interval
    assert status["lastAppliedRevision"] == f"main@sha1:{commit}"
    assert status["lastAttemptedRevision"] == f"main@sha1:{commit}"
    assert {e["mapping"] for e in status["inventory"]} == {"8080/tcp", "2222/tcp"}


def test_an_invalid_commit_changes_nothing_and_the_next_good_one_recovers(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """An invalid manifest is not applied: Ready turns False with ValidationFailed, the last good revision stays."""
    good = repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path)
    assert run.agent.reconcile().result == "changed"
    before = snapshot(emulator)
    bad = repo.commit(manifest(("web", 8080, 80)).replace("8080", "80800"), "typo")
    assert run.agent.reconcile().reason == "ValidationFailed"
    status = run.agent.status.to_json()
    assert run.condition("Ready") == ("False", "ValidationFailed")
    assert snapshot(emulator) == before
    assert status["lastAppliedRevision"] == f"main@sha1:{good}"
    assert status["lastAttemptedRevision"] == f"main@sha1:{bad}"
    assert run.condition("Stalled") == ("True", "ValidationFailed")
    assert "80800" in run.agent.status.condition("Ready").message  # type: ignore[union-attr]
    # The last good revision stays in force: drift is still healed meanwhile.
    emulator.router.remove(8080, "TCP")
    run.run_until(lambda: 8080 in ports(emulator), run.agent.config.interval * 1.1, "the last good revision's heal")
    fixed = repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)), "fix")
    run.run_until(lambda: run.condition("Ready") == OK, run.agent.config.interval * 1.1, "the fixed revision")
    assert run.agent.status.last_applied_revision == f"main@sha1:{fixed}"
    assert ports(emulator) == {8080, 2222}


def test_drift_is_healed_and_foreign_mappings_are_never_touched(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """An owned mapping deleted or changed by another client is restored; a foreign one stays exactly as it was."""
    emulator.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = driven(repo, emulator, tmp_path)
    assert run.agent.reconcile().result == "changed"
    foreign = [r for r in snapshot(emulator) if r[0] == 3074]
    ssh = next(r for r in snapshot(emulator) if r[0] == 2222)
    emulator.router.remove(8080, "TCP")
    # Someone edits the owned ssh mapping in the router's web page: a new internal port.
    emulator.router.add(2222, "TCP", "127.0.0.1", 2201, str(ssh[4]))
    run.clock.advance(run.agent.config.interval * 1.1)
    healed = run.agent.reconcile()
    assert owned(emulator) == {8080, 2222}
    assert (2222, "TCP", "127.0.0.1", 2200) in {r[:4] for r in snapshot(emulator)}
    assert "restored 8080/tcp -> 127.0.0.1:80 (web): it had gone from the router" in healed.changes
    assert any(c.startswith("changed 2222/tcp -> 127.0.0.1:2200 (ssh)") for c in healed.changes), healed.changes
    assert [r for r in snapshot(emulator) if r[0] == 3074] == foreign


def test_with_events_a_deletion_is_healed_in_seconds_not_at_the_interval(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """With GENA, a deletion by another client is healed within seconds on the clock although the interval is
    300 s: the router's event, delivered to the listener, brings the pass forward."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=300, watch=300, events=True)
    run.run_until(lambda: run.agent.events.to_json()["subscribed"], 0, "the event subscription")
    assert ports(emulator) == {8080}
    heard = run.agent.events.to_json()["changesHeard"]
    emulator.router.remove(8080, "TCP")
    # The event travels over loopback to the listener's thread: wait for it on the wall clock.
    wait_for(lambda: run.agent.events.to_json()["changesHeard"] > heard, DEADLINE, "the router's event")
    took = run.run_until(lambda: 8080 in ports(emulator), 5, "the event-driven heal")
    run.agent.events.close()
    assert took < 5


def test_without_events_the_agent_polls(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """A router that refuses SUBSCRIBE is polled at the interval instead, and the status says so."""
    emulator.events = False
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=2, watch=300, events=True)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    emulator.router.remove(8080, "TCP")
    run.run_until(lambda: 8080 in ports(emulator), 2 * 1.1, "the poll to heal")
    assert run.agent.events.to_json()["subscribed"] is False
    run.agent.events.close()
    assert any("refused an event subscription" in e["msg"] for e in run.log_lines())


def test_a_router_restart_is_noticed_and_the_table_restored(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """A reboot that wiped the table (uptime went back, subscribers forgotten) is healed at the next check
    of the router, long before the interval."""
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = driven(repo, emulator, tmp_path, interval=300, watch=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    run.run_for(5)  # the router has been up for 5 s, so the restart sets its uptime back
    passes = run.passes()
    emulator.reboot()
    took = run.run_until(lambda: ports(emulator) == {8080, 2222}, 1, "the table to be restored after the reboot")
    assert took <= 1
    assert run.passes() == passes + 1
    said = [e for e in run.log_lines() if e["msg"].startswith("router restarted:")]
    assert [e["msg"] for e in said] == ["router restarted: 2 owned mappings restored"]
    assert said[0]["cause"] == "its uptime went back"
    assert run.metric("portctl_router_restarts_total") == 1
    assert run.condition("Ready") == ("True", "RouterRestarted")
    boot = run.agent.status.to_json()["routerBoot"]
    assert (boot["restarts"], boot["lastRestartCause"]) == (1, "its uptime went back")
    run.run_for(300 * 1.1)  # the next pass: an ordinary one again
    assert run.condition("Ready") == OK
    assert run.metric("portctl_router_restarts_total") == 1


def test_only_the_owned_mappings_a_restart_took_are_counted_as_restored(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """A mapping the router kept is not restored, a foreign one re-added by its app stays as it is: N counts
    only the owned mappings the pass wrote again."""
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200), ("dns", 5353, 53)))
    run = driven(repo, emulator, tmp_path, interval=300, watch=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    run.run_for(5)
    kept = next(e for e in emulator.router.rows() if e.external_port == 5353)
    emulator.reboot()
    # The router kept one mapping (from its lease file, say), and another app put its own back.
    emulator.router.add(5353, "TCP", kept.internal_client, kept.internal_port, kept.description)
    emulator.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
    foreign = [e for e in snapshot(emulator) if e[0] == 3074]
    run.run_until(lambda: ports(emulator) == {8080, 2222, 5353, 3074}, 1, "the restored table")
    assert [e["msg"] for e in run.log_lines() if e["msg"].startswith("router restarted:")] == [
        "router restarted: 2 owned mappings restored"
    ]
    assert [e for e in snapshot(emulator) if e[0] == 3074] == foreign


def test_a_new_bootid_is_a_restart_though_the_uptime_went_on(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """A router whose uptime did not go back but whose SSDP BOOTID changed has restarted: its table is restored
    at the next check, long before the interval, and the log names the BOOTID."""
    ssdp = SsdpResponder(emulator.url, emulator.udn, "127.0.0.1", port=0, boot_id=lambda: emulator.router.boot_id)
    ssdp.start()

    def connect(*args: Any, **kw: Any) -> Any:
        backend = api.connect(*args, **kw)
        backend.ssdp_port = ssdp.port  # type: ignore[attr-defined]  # the responder's loopback port
        return backend

    try:
        repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
        run = driven(repo, emulator, tmp_path, interval=300, watch=1, connect=connect)
        run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
        assert run.agent.status.to_json()["routerBoot"]["bootId"] == 1
        run.run_for(5)
        emulator.reboot(uptime_kept=True)
        took = run.run_until(lambda: ports(emulator) == {8080, 2222}, 1, "the table restored after the new BOOTID")
    finally:
        ssdp.stop()
    assert took <= 1
    said = [e for e in run.log_lines() if e["msg"].startswith(("the router restarted", "router restarted"))]
    assert [e["msg"] for e in said] == [
        "the router restarted (its BOOTID went from 1 to 2); checking its table",
        "router restarted: 2 owned mappings restored",
    ]
    assert run.metric("portctl_router_restarts_total") == 1
    assert run.condition("Ready") == ("True", "RouterRestarted")
    assert run.agent.status.to_json()["routerBoot"]["bootId"] == 2


def test_a_new_wan_address_triggers_a_reconcile(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """A change of the router's external address is noticed at the next check and reconciled at once."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=300, watch=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    run.run_for(3)
    passes = run.passes()
    assert passes == 1  # checks of an unchanged router run no pass
    emulator.router.external_ip = "203.0.113.77"
    took = run.run_until(lambda: run.passes() > passes, 1, "a reconcile after the address change")
    assert took <= 1
    assert any("WAN address changed" in e["msg"] and "203.0.113.77" in e["msg"] for e in run.log_lines())


def test_short_leases_are_renewed_before_half_and_never_lapse(tmp_path: Any) -> None:
    """A 6 s lease is renewed by passes the agent schedules itself (the interval is 300 s): each comes before
    half the lease has gone, and the mapping is on the router at every moment in between. Router and agent
    share one virtual clock, so a busy machine cannot make the lease lapse."""
    clock = Clock()
    with EmulatorServer(Router(igd_version=2, clock=clock)) as server:
        path = str(tmp_path / "mappings.yaml")
        with open(path, "w") as f:
            f.write(manifest(("web", 8080, 80), lease="6s"))
        run = Driven(path, server, clock, interval=300, settle=0)
        outcome = run.agent.reconcile()
        assert outcome.result == "changed", outcome.message
        lowest = 6
        for _ in range(10):  # a minute of virtual time, a second at a time
            assert 0 < outcome.wait <= 3, outcome.wait
            waited = 0.0
            while waited < outcome.wait:
                step = min(1.0, outcome.wait - waited)
                clock.advance(step)
                waited += step
                rows = {e.external_port: server.router.remaining(e) for e in server.router.rows()}
                assert 8080 in rows, f"the lease lapsed {waited} s after a pass"
                lowest = min(lowest, rows[8080])
            outcome = run.agent.reconcile()
            assert outcome.result != "failed", outcome.message
        renewals = [e for e in run.log_lines() if e["msg"].startswith("renewed the lease of 8080/tcp")]
    assert len(renewals) >= 10
    assert lowest >= 3  # renewed before half the lease had passed


def test_a_source_that_fails_backs_off_and_keeps_the_router_converged(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """With the repository gone, Ready turns False (SourceFetchFailed), waits grow, and drift is still healed."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=60, watch=300, max_backoff=60)
    assert run.agent.reconcile().result == "changed"
    os.rename(repo.path, repo.path + ".gone")
    emulator.router.remove(8080, "TCP")
    waits = []
    for _ in range(3):
        outcome = run.agent.reconcile()
        assert outcome.reason == "SourceFetchFailed", outcome.message
        assert 8080 in ports(emulator), "the last good revision was not kept converged"
        waits.append(outcome.wait)
        run.clock.advance(outcome.wait)
    assert run.condition("Ready") == ("False", "SourceFetchFailed")
    assert waits[1] > waits[0] and waits[2] > waits[1]  # exponential backoff
    assert max(waits) < 60


def test_an_empty_manifest_does_not_prune_everything_unless_allowed(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """A commit that empties the manifest is refused as PlanBlocked (a broken generator, a bad merge);
    with allow-empty it is applied. The foreign mapping stays throughout."""
    emulator.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = driven(repo, emulator, tmp_path)
    assert run.agent.reconcile().result == "changed"
    repo.commit(manifest(), "oops")
    blocked = run.agent.reconcile()
    assert run.condition("Ready") == ("False", "PlanBlocked")
    assert "pass --allow-empty if that is meant" in blocked.message
    assert owned(emulator) == {8080, 2222}
    allowed = driven(repo, emulator, tmp_path, allow_empty=True)
    assert allowed.agent.reconcile().result == "changed"
    assert allowed.condition("Ready") == OK
    assert owned(emulator) == set()
    assert ports(emulator) == {3074}


def test_the_router_going_away_is_reported_and_backed_off(repo: GitRepo, tmp_path: Any) -> None:
    """An unreachable router turns Ready False with RouterUnreachable; the mappings come back within an
    interval of its return, and the pass says the router restarted meanwhile (though the connection is new)."""
    router = Router()
    first = EmulatorServer(router).start()
    port = int(first.url.split(":")[2].split("/")[0])
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, first, tmp_path, interval=5, watch=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    first.stop()
    run.run_until(lambda: run.condition("Ready") == ("False", "RouterUnreachable"), 1, "the router to be missed")
    router.reboot()
    back = EmulatorServer(router, port=port).start()
    try:
        run.run_until(lambda: ports(back) == {8080}, 5 * 1.1, "the mapping after the router came back")
        assert run.condition("Ready") == ("True", "RouterRestarted")
        assert "router restarted: 1 owned mapping restored" in [e["msg"] for e in run.log_lines()]
        assert run.metric("portctl_router_restarts_total") == 1
    finally:
        back.stop()


def test_a_suspended_agent_heals_nothing_however_long_and_resumed_heals_at_once(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """Suspended, no pass runs through ten intervals and a request for one is held; resumed, the held
    request is served at once."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    run.agent.suspend()
    emulator.router.remove(8080, "TCP")
    passes = run.passes()
    run.agent.request_reconcile()  # as the router's event would
    run.run_for(10)
    assert run.passes() == passes
    assert 8080 not in ports(emulator)
    assert run.condition("Ready") == ("False", "Suspended")
    run.agent.resume()
    took = run.run_until(lambda: 8080 in ports(emulator), 0, "the heal after resume")
    assert took == 0
    assert run.condition("Ready") == OK


def test_suspend_resume_and_reconcile_over_the_control_api(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """Suspended, the agent refuses to reconcile; resumed, a reconcile heals and answers with its result.
    The agent's clock stands still: every pass here is one the test asked for."""
    repo.commit(manifest(("web", 8080, 80)))
    with AgentRun(config(repo, emulator, tmp_path, interval=1, watch=300, events=False), Clock()) as run:
        assert call(run.listen, "reconcile", wait=DEADLINE)["done"] is True
        assert ports(emulator) == {8080}
        assert call(run.listen, "suspend") == {"suspended": True}
        assert run.condition()["reason"] == "Suspended"
        emulator.router.remove(8080, "TCP")
        with pytest.raises(PortctlError, match="suspended"):
            call(run.listen, "reconcile")
        assert 8080 not in ports(emulator)
        call(run.listen, "resume")
        answer = call(run.listen, "reconcile", wait=DEADLINE)
        assert answer["done"] is True
        assert 8080 in ports(emulator)
        emulator.router.remove(8080, "TCP")
        answer = call(run.listen, "reconcile", wait=DEADLINE)
    assert answer["result"]["result"] == "changed"
    assert answer["result"]["changes"] == ["restored 8080/tcp -> 127.0.0.1:80 (web): it had gone from the router"]


def test_health_readiness_status_and_metrics(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """/healthz, /readyz, /status and /metrics say what the agent is doing, with the documented names."""
    emulator.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
    commit = repo.commit(manifest(("web", 8080, 80), lease="1h"))
    run = driven(repo, emulator, tmp_path)
    server = ControlServer(run.agent, "127.0.0.1", 0).start()
    try:
        assert get(server.address, "/healthz")[0] == 200
        assert get(server.address, "/readyz")[0] == 503  # no pass yet
        run.agent.reconcile()
        assert get(server.address, "/readyz")[0] == 200
        status = json.loads(get(server.address, "/status")[1])
        metrics = get(server.address, "/metrics")[1].decode()
        repo.commit("owner: [", "broken")
        run.agent.reconcile()
        not_ready = get(server.address, "/readyz")
    finally:
        server.stop()
    assert status["inventory"][0]["mapping"] == "8080/tcp"
    assert status["inventory"][0]["leaseExpiry"].endswith("Z")
    assert status["results"][0]["revision"] == f"main@sha1:{commit}"
    assert not_ready[0] == 503
    assert json.loads(not_ready[1])["condition"]["reason"] == "ValidationFailed"
    for line in (
        'portctl_reconcile_total{result="changed"} 1.0',
        'portctl_mappings{state="owned"} 1.0',
        'portctl_mappings{state="foreign"} 1.0',
        'portctl_igd_requests_total{action="AddPortMapping",upnp_error=""} 1.0',
        f'portctl_info{{revision="main@sha1:{commit}",router="{emulator.udn}"}} 1.0',
    ):
        assert line in metrics, line
    for name in (
        "portctl_reconcile_duration_seconds_count",
        'portctl_lease_expiry_timestamp_seconds{mapping="web 8080/tcp"}',
        "portctl_last_success_timestamp_seconds",
    ):
        assert name in metrics, name


def test_logs_are_json_lines_that_say_what_changed(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """Every log line is one JSON object; a reconcile line carries revision, router, duration and next run."""
    commit = repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path)
    run.agent.reconcile()
    lines = run.log_lines()
    added = next(e for e in lines if e["msg"].startswith("added"))
    done = next(e for e in lines if e["msg"].startswith("reconciled"))
    assert added["msg"] == "added 8080/tcp -> 127.0.0.1:80 (web)"
    assert added["revision"] == done["revision"] == f"main@sha1:{commit}"
    assert done["router"] == emulator.url
    assert isinstance(done["duration"], float) and isinstance(done["next_run"], float)


def test_the_control_api_refuses_cross_site_and_rebinding_requests(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """POSTs without the control header, and requests addressed to a non-loopback host name, are refused."""
    import urllib.error
    import urllib.request

    repo.commit(manifest(("web", 8080, 80)))
    with AgentRun(config(repo, emulator, tmp_path), Clock()) as run:
        plain = urllib.request.Request(f"http://{run.listen}/suspend", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(plain, timeout=DEADLINE)
        rebound = urllib.request.Request(f"http://{run.listen}/status", headers={"Host": "evil.example:9477"})
        with pytest.raises(urllib.error.HTTPError) as misdirected:
            urllib.request.urlopen(rebound, timeout=DEADLINE)
        suspended = run.status()["suspended"]
    assert refused.value.code == 403
    assert misdirected.value.code == 421
    assert suspended is False


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/portctl", received
    server.shutdown()
    server.server_close()


def test_the_webhook_hears_changes_and_new_failures_only(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """One POST per reconcile that changed the router, one when a failure starts; quiet passes send none."""
    url, received = webhook
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path, interval=1, webhook=url)
    assert run.agent.webhook is not None
    deliver = run.agent.webhook.send
    sent: list[dict[str, Any]] = []  # what the agent decided to send, in pass order

    def send(event: dict[str, Any]) -> None:
        sent.append(event)
        deliver(event)

    run.agent.webhook.send = send  # type: ignore[method-assign]
    run.agent.reconcile()  # changed: heard
    run.agent.reconcile()  # unchanged: quiet
    repo.commit("owner: [", "broken")
    for _ in range(4):  # failed, then failed again for the same reason: heard once
        run.clock.advance(1)
        run.agent.reconcile()
    wait_for(lambda: len(received) == 2, DEADLINE, "both webhooks to be delivered")
    assert [(e["result"], e["reason"]) for e in sent] == [
        ("changed", "ReconciliationSucceeded"),
        ("failed", "ValidationFailed"),
    ]
    assert received[0]["result"] == "changed" and received[0]["changes"] == ["added 8080/tcp -> 127.0.0.1:80 (web)"]
    assert (received[1]["result"], received[1]["reason"]) == ("failed", "ValidationFailed")


def test_sigterm_finishes_the_apply_and_release_on_exit_removes_only_owned_mappings(
    repo: GitRepo, tmp_path: Any
) -> None:
    """SIGTERM in the middle of a slow apply lets it finish, then --release-on-exit deletes what the agent owns."""
    from dataclasses import replace

    from reconciler.emulator import PROFILES

    # Every request takes 0.4 s, so the signal lands while the apply is under way.
    with EmulatorServer(Router(replace(PROFILES["slow"], delay=0.4))) as slow:
        slow.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
        repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
        agent = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "agent", "--repo", repo.path, "--router", slow.url,
             "--workdir", str(tmp_path / "wd"), "--listen", "127.0.0.1:0", "--release-on-exit", "--timeout", "10"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: slow.router.calls["AddPortMapping"] >= 1, 60, "the apply to start")
        agent.terminate()
        _, err = agent.communicate(timeout=120)
        lines = [json.loads(line) for line in err.splitlines()]
        messages = [e["msg"] for e in lines]
    assert agent.returncode == 0
    assert "added 8080/tcp -> 127.0.0.1:80 (web)" in messages  # the apply was finished ...
    assert "added 2222/tcp -> 127.0.0.1:2200 (ssh)" in messages
    assert "released 8080/tcp (web)" in messages and "released 2222/tcp (ssh)" in messages  # ... then released
    assert ports(slow) == {3074}


def test_signed_commits_only(repo: GitRepo, emulator: EmulatorServer, tmp_path: Any) -> None:
    """With --verify-signatures an unsigned commit is refused (VerificationFailed) and a signed one applied."""
    key = str(tmp_path / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    signers = str(tmp_path / "allowed_signers")
    with open(key + ".pub") as f, open(signers, "w") as out:
        out.write(f"admin@homelab.test {f.read()}")
    signed = repo.commit(manifest(("web", 8080, 80)), sign_with=key + ".pub")
    run = driven(repo, emulator, tmp_path, verify_signatures=True, allowed_signers=signers)
    run.agent.reconcile()
    assert run.condition("Ready") == OK
    unsigned = repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)), "unsigned")
    run.agent.reconcile()
    assert run.condition("Ready") == ("False", "VerificationFailed")
    status = run.agent.status.to_json()
    assert ports(emulator) == {8080}
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)), "signed", sign_with=key + ".pub")
    run.agent.reconcile()
    assert run.condition("Ready") == OK
    assert status["lastAppliedRevision"] == f"main@sha1:{signed}"
    assert unsigned[:12] in next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
    assert ports(emulator) == {8080, 2222}


def test_a_bug_in_one_pass_is_reported_and_the_loop_goes_on(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """An unexpected exception turns Ready False (InternalError, traceback in the log); the next pass recovers."""
    repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    working = run.agent.source

    class Broken:
        def describe(self) -> str:
            return "broken"

        def fetch(self) -> Any:
            raise ZeroDivisionError("a bug")

    run.agent.source = Broken()  # type: ignore[assignment]
    run.run_until(lambda: run.condition("Ready") == ("False", "InternalError"), 2 * 1.1, "the crash")
    run.agent.source = working
    run.run_until(lambda: run.condition("Ready") == OK, 2 * 1.1, "the recovery")
    crash = next(e for e in run.log_lines() if e["msg"].startswith("reconcile crashed"))
    assert crash["msg"] == "reconcile crashed: ZeroDivisionError: a bug"
    assert "Traceback" in crash["traceback"]


def test_a_billion_laughs_commit_is_refused_quickly_and_the_last_good_revision_stays(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """Aliases of aliases are ValidationFailed with file and line; the last good revision stays."""
    good = repo.commit(manifest(("web", 8080, 80)))
    run = driven(repo, emulator, tmp_path)
    run.agent.reconcile()
    before = snapshot(emulator)
    bad = repo.commit(manifest(("web", 8080, 80)) + billion_laughs(), "aliases")
    outcome = run.agent.reconcile()
    assert run.condition("Ready") == ("False", "ValidationFailed")
    assert "mappings.yaml:" in outcome.message
    assert "expands to more than 50000 values" in outcome.message
    assert run.agent.status.last_applied_revision == f"main@sha1:{good}"
    assert run.agent.status.last_attempted_revision == f"main@sha1:{bad}"
    assert snapshot(emulator) == before


def test_a_restart_whose_pass_partly_failed_still_says_so(
    repo: GitRepo, emulator: EmulatorServer, tmp_path: Any
) -> None:
    """The pass after a restart restores one mapping and fails another: the condition is the failure,
    and its message says the router restarted and what was restored."""
    repo.commit(manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = driven(repo, emulator, tmp_path, interval=300, watch=1)
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")
    run.run_for(5)
    emulator.reboot()
    emulator.router.fail_next("AddPortMapping", 501)
    run.run_until(lambda: run.passes() >= 2, 1, "the pass after the restart")
    condition = run.agent.status.condition("Ready")
    assert condition is not None and condition.reason == "ApplyFailed"
    assert condition.message.startswith("router restarted: 1 owned mapping restored (its uptime went back); ")
