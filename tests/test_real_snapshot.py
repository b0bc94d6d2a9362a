"""Router snapshots on real miniupnpd: `show` writes one on the LAN host; `plan --snapshot` in a network
namespace with no route to the router plans the same changes as a live plan; once the router changes,
the live plan differs and the snapshot is refused past --max-snapshot-age. A manifest with
`internal_client: auto` planned from a second LAN address against the LAN host's snapshot proposes
no change of internal client, as a CI runner elsewhere on the LAN would see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import snapshot
from tests import docschemas
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import HTTP_PORT, LAN2_IP, LAN_IP, ROUTER_LAN_IP, Lab

pytestmark = pytest.mark.router

lab = module_lab("sn", second_host=True)

APPLIED = f"""\
apiVersion: portctl/v1
owner: snap
mappings:
  - name: web
    external_port: 32080
    internal_port: 8080
    internal_client: auto
  - name: old
    external_port: 32081
    internal_port: 8081
    internal_client: {LAN_IP}
"""
# The change a pull request proposes: web moves to another internal port, old goes, new comes.
PROPOSED = f"""\
apiVersion: portctl/v1
owner: snap
mappings:
  - name: web
    external_port: 32080
    internal_port: 8090
    internal_client: auto
  - name: new
    external_port: 32082
    internal_port: 8082
    internal_client: {LAN_IP}
"""


@pytest.fixture
def offline(lab: Lab) -> Iterator[str]:
    """A network namespace with only loopback up: no route to the router, or anywhere."""
    name = f"{lab.prefix}off"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def portctl_in(lab: Lab, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = lab.run(ns, sys.executable, "-m", "reconciler", *args, "--no-color", check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def changes(doc: dict[str, Any]) -> list[tuple[str, str, object, object]]:
    """Each change: its action, name, and the client and port it writes."""
    after = [c["after"] or {} for c in doc["changes"]]
    return [
        (c["action"], c["name"], a.get("internal_client"), a.get("internal_port"))
        for c, a in zip(doc["changes"], after, strict=True)
    ]


def test_a_snapshot_plan_offline_is_the_live_plan_until_the_router_changes(lab: Lab, offline: str) -> None:
    lab.empty_table()
    lab.add_foreign(32090, "TCP", "someone's game")
    applied, proposed = write(lab.workdir, APPLIED, "applied.yaml"), write(lab.workdir, PROPOSED, "proposed.yaml")
    r = lab.portctl("apply", applied, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    foreign = [row for row in lab.table() if row[0] == 32090]
    snap = str(Path(lab.workdir) / "router.json")
    r = lab.portctl("show", proposed, "--snapshot-out", snap)
    assert r.returncode == 0, r.stderr
    doc = json.loads(Path(snap).read_text())
    assert docschemas.errors("snapshot", doc) == []  # resolved offline: the schemas' $ids are never fetched
    assert doc["auto"]["internal_client"] == LAN_IP
    assert {m["key"]["external_port"] for m in doc["mappings"]} == {row[0] for row in lab.table()}
    live = lab.portctl("plan", proposed, "--format", "json")
    assert live.returncode == 0, live.stderr

    # The namespace reaches nothing: the router is not even routable from it.
    probe = f"import socket; socket.create_connection(({ROUTER_LAN_IP!r}, {HTTP_PORT}), timeout=5)"
    unreachable = lab.run(offline, sys.executable, "-c", probe, check=False)
    assert unreachable.returncode != 0 and "unreachable" in unreachable.stderr.lower()
    r = portctl_in(lab, offline, "plan", proposed, "--snapshot", snap, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert changes(json.loads(r.stdout)) == changes(json.loads(live.stdout))
    assert len(json.loads(r.stdout)["changes"]) == 3
    text = portctl_in(lab, offline, "plan", proposed, "--snapshot", snap, "--max-snapshot-age", "24h")
    assert text.returncode == 0 and f"Router table from snapshot {snap} at " in text.stdout

    # The router changes: another app takes the port the proposal adds.
    r = lab.upnpc("-e", "another app", "-a", LAN_IP, "8082", "32082", "TCP", "0")
    assert "is redirected" in r.stdout, r.stdout + r.stderr
    changed = lab.portctl("plan", proposed, "--format", "json")
    now_live = json.loads(changed.stdout)
    assert [k["key"]["external_port"] for k in now_live["conflicts"]] == [32082]
    assert changes(now_live) != changes(json.loads(live.stdout))
    # ... and a day later the snapshot is refused as stale.
    _age(snap, 25 * 3600)
    stale = portctl_in(lab, offline, "plan", proposed, "--snapshot", snap, "--max-snapshot-age", "24h")
    assert stale.returncode == 1 and stale.stdout == ""
    assert f"error: {snap}: the snapshot was read 1d1h" in stale.stderr and "--max-snapshot-age 1d" in stale.stderr
    # Planning wrote nothing: the foreign row is as it was.
    assert [row for row in lab.table() if row[0] == 32090] == foreign


def test_auto_planned_from_another_lan_address_uses_the_snapshot_host(lab: Lab) -> None:
    lab.empty_table()
    applied = write(lab.workdir, APPLIED, "auto.yaml")
    assert lab.portctl("apply", applied, "--auto-approve").returncode == 0
    assert (32080, "TCP", LAN_IP, 8080) in {row[:4] for row in lab.table()}
    snap = str(Path(lab.workdir) / "agent-host.json")
    assert lab.portctl("show", "--snapshot-out", snap).returncode == 0

    # On the second LAN host, as a self-hosted CI runner, `auto` would be that host.
    here = portctl_in(lab, lab.lan2, "validate", applied)
    assert here.stdout.splitlines()[1] == f"internal_client auto = {LAN2_IP} (this host)"
    # Against the agent host's snapshot, `auto` is the agent's host: nothing to change.
    r = portctl_in(lab, lab.lan2, "plan", applied, "--snapshot", snap, "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"internal_client auto = {LAN_IP} (from the snapshot)" in r.stdout
    said = portctl_in(lab, lab.lan2, "validate", applied, "--snapshot", snap)
    assert said.stdout.splitlines()[1] == f"internal_client auto = {LAN_IP} (from the snapshot)"


def _age(path: str, seconds: float) -> None:
    doc = json.loads(Path(path).read_text())
    at = doc["read_at"]["epoch"] - seconds
    doc["read_at"] = {"time": snapshot.iso(at), "epoch": at}
    Path(path).write_text(json.dumps(doc))
