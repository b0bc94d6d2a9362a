"""The agent against the emulator when things go oddly: revisions that crash the loader, odd text from
the router, a manifest file caught mid-write. Passes are driven one at a time on an injected clock."""

from __future__ import annotations

import os
from typing import Any

import pytest

from reconciler.agent.source import FileSource, Unsettled
from reconciler.emulator import EmulatorServer
from tests.agenthelp import Clock, Driven, manifest
from tests.helpers import snapshot

FOREIGN = (3074, "UDP", "127.0.0.9", 3074, "Xbox Live")


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def owned_rows(server: EmulatorServer) -> set[int]:
    return {r[0] for r in snapshot(server) if r[0] != FOREIGN[0]}  # type: ignore[misc]


def test_a_revision_that_crashes_the_loader_leaves_the_last_good_one_healing_drift(
    emulator: EmulatorServer, tmp_path: Any
) -> None:
    """A manifest the loader cannot digest (a 5000-digit port) is reported once, counted, and the
    passes go on healing the router to the last good revision; foreign rows stay byte-identical."""
    emulator.router.add(*FOREIGN)
    path = str(tmp_path / "mappings.yaml")
    write(path, manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    run = Driven(path, emulator, settle=0)
    assert run.agent.reconcile().result == "changed"
    good = run.agent.status.last_applied_revision
    foreign = [r for r in snapshot(emulator) if r[0] == FOREIGN[0]]

    write(path, manifest(("web", 8080, 80), ("ssh", 2222, 2200)).replace("2222", "9" * 5000))
    outcomes = []
    for _ in range(3):
        emulator.router.remove(8080, "TCP")  # drift another app makes between passes
        outcomes.append(run.agent.reconcile())
        assert owned_rows(emulator) == {8080, 2222}, "drift was not healed to the last good revision"
    errors_after_first = run.errors()

    assert [o.result for o in outcomes] == ["failed"] * 3
    assert run.condition("Ready")[0] == "False"
    assert run.condition("Ready")[1] in ("InternalError", "ValidationFailed")
    assert run.condition("Stalled") == ("True", run.condition("Ready")[1])
    assert run.agent.status.last_applied_revision == good
    assert run.agent.status.last_attempted_revision != good
    # Logged when it appeared, not again at every pass; counted at every pass.
    assert run.errors() == errors_after_first and len(errors_after_first) >= 1
    reason = run.condition("Ready")[1]
    assert run.metric(f'portctl_errors_total{{reason="{reason}"}}') == 3
    assert [r for r in snapshot(emulator) if r[0] == FOREIGN[0]] == foreign


def test_a_loader_that_raises_anything_still_leaves_the_router_converged(
    emulator: EmulatorServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the loader raises for a revision, the pass reports InternalError and heals to the last good one."""
    from reconciler import manifest as manifest_module

    path = str(tmp_path / "mappings.yaml")
    write(path, manifest(("web", 8080, 80)))
    run = Driven(path, emulator, settle=0)
    run.agent.reconcile()
    real_parse = manifest_module.parse

    def parse(text: str, where: str = "<manifest>", memo: Any = None) -> Any:
        if "ssh" in text:
            raise KeyError("a loader bug")
        return real_parse(text, where, memo)

    monkeypatch.setattr(manifest_module, "parse", parse)
    write(path, manifest(("web", 8080, 80), ("ssh", 2222, 2200)))
    emulator.router.remove(8080, "TCP")
    outcome = run.agent.reconcile()

    assert (outcome.result, outcome.reason) == ("failed", "InternalError")
    assert "KeyError" in outcome.message and "stays in force" in outcome.message
    assert owned_rows(emulator) == {8080}


def test_odd_digits_in_the_routers_uptime_do_not_stop_the_agent(emulator: EmulatorServer, tmp_path: Any) -> None:
    """An uptime of '²' (a digit to str.isdigit, not to int) is logged once, counted, and shown in the
    status (restarts go unnoticed between passes meanwhile); the agent keeps converging."""
    status = emulator.router._status

    def odd_uptime(args: Any, client: str) -> Any:
        return {**status(args, client), "NewUptime": "\u00b2"}

    emulator.router._status = odd_uptime  # type: ignore[method-assign]
    path = str(tmp_path / "mappings.yaml")
    write(path, manifest(("web", 8080, 80)))
    run = Driven(path, emulator, interval=300, watch=1, settle=0)
    run.run_until(lambda: run.condition("Ready") == ("True", "ReconciliationSucceeded"), 0, "the first pass")
    # Several checks between passes read the odd uptime; the loop lives through all of them.
    calls = emulator.router.calls["GetStatusInfo"]
    run.run_for(3.5)
    assert emulator.router.calls["GetStatusInfo"] >= calls + 3
    emulator.router.remove(8080, "TCP")
    run.agent.request_reconcile()
    run.run_until(lambda: 8080 in {e.external_port for e in emulator.router.rows()}, 0, "the heal")
    problems = [e for e in run.log_lines() if "uptime" in e["msg"] and e["level"] == "error"]
    shown = run.agent.status.to_json()["problems"]

    assert len(problems) == 1
    assert run.metric('portctl_errors_total{reason="RouterError"}') >= 3
    assert [(p["step"], p["reason"]) for p in shown] == [("reading the router's uptime", "RouterError")]
    assert "uptime could not be read" in shown[0]["message"]


def test_a_file_source_waits_until_the_file_has_been_still_for_the_settle_interval(tmp_path: Any) -> None:
    """Unsettled until size, mtime and content have stayed the same for `settle` on the clock; then the
    artifact carries the bytes that were checked."""
    path = str(tmp_path / "mappings.yaml")
    write(path, "owner: a\n")
    clock = Clock()
    source = FileSource(path, settle=5, clock=clock)
    with pytest.raises(Unsettled) as first:
        source.fetch()
    assert first.value.retry_in == 5
    clock.advance(4)
    with pytest.raises(Unsettled):
        source.fetch()
    write(path, "owner: b\n")  # still being written: the wait starts again
    clock.advance(4)
    with pytest.raises(Unsettled) as again:
        source.fetch()
    assert again.value.retry_in == 5
    clock.advance(5)
    artifact = source.fetch()
    assert artifact.content == b"owner: b\n"
    os.utime(path, ns=(0, 0))  # touched: same bytes, but someone is at it
    with pytest.raises(Unsettled):
        source.fetch()


def test_a_manifest_caught_mid_write_prunes_nothing(emulator: EmulatorServer, tmp_path: Any) -> None:
    """A half-written manifest (it parses, but lacks mappings) is not applied while it changes: nothing is
    pruned, drift is healed to the last good revision, and the finished file is applied once still."""
    emulator.router.add(*FOREIGN)
    path = str(tmp_path / "mappings.yaml")
    full = manifest(("web", 8080, 80), ("ssh", 2222, 2200), ("dns", 5353, 53))
    write(path, full)
    run = Driven(path, emulator, settle=5)

    first = run.agent.reconcile()  # a file never seen before may itself be mid-write
    assert (first.result, first.wait) == ("unchanged", 5)
    assert run.condition("Ready") == ("Unknown", "SourceSettling")
    assert owned_rows(emulator) == set()
    run.clock.advance(5)
    assert run.agent.reconcile().result == "changed"
    assert owned_rows(emulator) == {8080, 2222, 5353}
    foreign = [r for r in snapshot(emulator) if r[0] == FOREIGN[0]]

    # A deploy rewrites the file: the first part is on disk, ssh and dns are not yet.
    half = full[: full.index("  - name: ssh")]
    write(path, half)
    run.clock.advance(30)
    emulator.router.remove(8080, "TCP")
    during = run.agent.reconcile()
    assert owned_rows(emulator) == {8080, 2222, 5353}  # healed, and nothing pruned
    assert during.wait <= 5
    assert run.condition("Reconciling") == ("True", "SourceSettling")
    assert run.condition("Ready") == ("True", "ReconciliationSucceeded")

    finished = manifest(("web", 8080, 80), ("ssh", 2222, 2200), ("dns", 5353, 53), ("git", 2022, 2022))
    run.clock.advance(3)
    write(path, finished)
    run.clock.advance(3)
    seen = run.agent.reconcile()  # the finished file, first seen now: it must stay so for 5 s from here
    assert owned_rows(emulator) == {8080, 2222, 5353}
    run.clock.advance(4)
    run.agent.reconcile()
    assert owned_rows(emulator) == {8080, 2222, 5353}
    run.clock.advance(seen.wait - 4)
    last = run.agent.reconcile()
    assert last.result == "changed", last.message

    assert owned_rows(emulator) == {8080, 2222, 5353, 2022}
    assert not [args for action, args in emulator.router.journal if action == "DeletePortMapping"]
    assert [r for r in snapshot(emulator) if r[0] == FOREIGN[0]] == foreign
