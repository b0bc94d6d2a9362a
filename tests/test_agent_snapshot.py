"""The agent publishes the router's snapshot after each pass, for plans on hosts that cannot reach the router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.agent.config import ConfigError, build
from reconciler.emulator import EmulatorServer
from tests import docschemas
from tests.agenthelp import Driven, manifest
from tests.helpers import FOREIGN, portctl, write

OK = ("True", "ReconciliationSucceeded")


def test_each_pass_writes_a_snapshot_a_plan_can_use(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a pass the snapshot holds the table the pass left, and a plan from it has nothing to change."""
    emulator.router.add(*FOREIGN)
    text = manifest(("web", 8080, 80), ("ssh", 2222, 2200))
    path = write(tmp_path, text)
    snap = str(tmp_path / "router.json")
    run = Driven(path, emulator, snapshot=snap, settle=0)
    run.run_until(lambda: Path(snap).exists(), 60, "the first snapshot")
    doc = json.loads(Path(snap).read_text())
    assert docschemas.errors("snapshot", doc) == []
    rows = {(m["key"]["external_port"], m["owner"]) for m in doc["mappings"]}
    assert rows == {(8080, "owned"), (2222, "owned"), (FOREIGN[0], "foreign")}
    emulator.stop()
    planned = portctl(capsys, "plan", path, "--snapshot", snap, "--detailed-exitcode")
    assert planned.code == 0, planned.out + planned.err
    assert f"from snapshot {snap}" in planned.out


def test_a_healed_drift_is_in_the_next_snapshot(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A mapping deleted behind the agent's back and restored shows in the snapshot written after that pass."""
    path = write(tmp_path, manifest(("web", 8080, 80)))
    snap = tmp_path / "router.json"
    run = Driven(path, emulator, snapshot=str(snap), settle=0)
    run.run_until(snap.exists, 60, "the first snapshot")
    emulator.router.remove(8080, "TCP")
    snap.unlink()
    run.run_until(snap.exists, 120, "the next snapshot")  # an interval (60 s) with its jitter, at most
    assert [m["key"]["external_port"] for m in json.loads(snap.read_text())["mappings"]] == [8080]
    assert 8080 in {e.external_port for e in emulator.router.rows()}


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_pass(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A snapshot path in a missing directory is logged once; the router is still converged."""
    path = write(tmp_path, manifest(("web", 8080, 80)))
    run = Driven(path, emulator, snapshot=str(tmp_path / "missing" / "router.json"), settle=0)
    run.run_until(lambda: run.agent.status.to_json()["lastAppliedRevision"] != "", 60, "the first pass")
    assert 8080 in {e.external_port for e in emulator.router.rows()}
    logged = [line for line in run.logs.getvalue().splitlines() if "SnapshotFailed" in line]
    assert len(logged) == 1 and "cannot write the snapshot" in logged[0]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in run.agent.status.to_json()["conditions"]}
    assert conditions["Ready"] == OK


def test_the_config_takes_a_snapshot_path(tmp_path: Any) -> None:
    """`snapshot: {path: FILE}` in the config file, or --snapshot FILE, sets where it is written."""
    path = write(tmp_path, "manifest: m.yaml\nsnapshot:\n  path: /var/lib/portctl/router.json\n", "a.yaml")
    assert build(path, {}).snapshot == "/var/lib/portctl/router.json"
    assert build(path, {"snapshot": "/tmp/r.json"}).snapshot == "/tmp/r.json"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("snapshot:\n  pth: x.json\n", "a.yaml:3:3: snapshot: unknown setting 'pth'"),
        ("snapshot: [1]\n", "a.yaml:2:11: snapshot: expected {path: FILE}"),
        ("snapshot:\n  path: ''\n", "snapshot: expected {path: FILE}"),
    ],
)
def test_a_bad_snapshot_setting_is_one_message(tmp_path: Any, text: str, message: str) -> None:
    """A snapshot setting that is not {path: FILE} is refused naming the file and line."""
    path = write(tmp_path, "manifest: m.yaml\n" + text, "a.yaml")
    with pytest.raises(ConfigError) as refused:
        build(path, {})
    assert message in str(refused.value)
