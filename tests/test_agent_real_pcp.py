"""The agent over pcp:// on the LAN host, keeping real miniupnpd (UPnP IGD off) converged through a restart.

miniupnpd restarted with an empty table starts a new PCP epoch: the agent says the router restarted,
every owned mapping is back and carries traffic from the internet side again, and another client's
natpmpc mapping keeps its rules byte for byte. `portctl show` over pcp:// reports the epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests import routerlab
from tests.agenthelp import GitRepo, manifest
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP, ROUTER_LAN_IP, wait_for
from tests.test_agent_real import LISTEN, RunningAgent
from tests.test_real_pcp_backend import natpmpc, rules

pytestmark = pytest.mark.router
ROUTER = f"pcp://{ROUTER_LAN_IP}"
WEB, SSH, FOREIGN = (18090, 8090), (12290, 8091), (13390, 8092)  # (external, internal)
RESTORED = "router restarted: 2 owned mappings restored"


lab = module_lab("px", upnp=False)


class PcpAgent(RunningAgent):
    """`portctl agent` in the LAN namespace, as a user runs it there, against the router's PCP server."""

    def __init__(self, lab: routerlab.Lab, repo: GitRepo, workdir: str, *args: str) -> None:
        self.lab = lab
        self.log_path = os.path.join(workdir, "agent.log")
        cmd = [sys.executable, "-m", "reconciler", "agent", "--repo", repo.path, "--router", ROUTER]
        cmd += ["--workdir", os.path.join(workdir, "checkout"), "--listen", LISTEN, *args]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", lab.lan, *cmd], stderr=log)


@pytest.fixture
def agent() -> Iterator[list[RunningAgent]]:
    started: list[RunningAgent] = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(60)  # a killed process on a busy machine can take seconds to be reaped


def shown(lab: routerlab.Lab) -> dict[str, Any]:
    """`portctl show --json` over pcp:// from the LAN host: its "boot"."""
    r = lab.portctl("show", "--json", "--router", ROUTER, router=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    return json.loads(r.stdout)["boot"]  # type: ignore[no-any-return]


def test_a_restart_with_an_empty_table_is_said_and_every_owned_mapping_is_back(
    lab: routerlab.Lab, agent: list[RunningAgent], tmp_path: Any
) -> None:
    """miniupnpd restarted empty while the agent runs over PCP: its epoch went back, the agent logs the
    restart with the mappings it restored, counts it, and traffic flows again; a foreign mapping stays."""
    lab.stop_router()
    lab.start_router()
    repo = GitRepo(str(tmp_path / "homelab"))
    repo.commit(manifest(("web", *WEB), ("ssh", *SSH), lease="10m", client=LAN_IP))
    a = PcpAgent(lab, repo, str(tmp_path), "--interval", "10s")
    agent.append(a)
    a.wait_ready("True", "ReconciliationSucceeded")
    lab.serve(WEB[1], lifetime=600)
    lab.serve(SSH[1], lifetime=600)
    assert lab.reaches(WEB[0]) and lab.reaches(SSH[0])
    assert a.status()["routerBoot"]["source"] == "pcp-epoch"
    # An epoch is proved to have gone back only beyond the RFC's allowance (a second, and 2 s of drift):
    # let the router's run well past that first. show reports it, as it reports a UPnP router's uptime.
    wait_for(lambda: (shown(lab)["epoch_seconds"] or 0) >= 20, 90, "the router's epoch to pass 20 s")
    boot = shown(lab)
    assert (boot["source"], boot["uptime_seconds"]) == ("pcp-epoch", None) and boot["since"].endswith("Z"), boot
    text = lab.portctl("show", "--router", ROUTER, "--no-color", router=False).stdout
    assert "Booted: PCP epoch " in text, text

    lab.stop_router()
    lab.start_router()  # no lease file kept: the table is empty (the agent may be restoring it already)
    natpmpc(lab, *FOREIGN, "tcp")  # another application on the host maps its port again
    foreign = rules(lab, *FOREIGN)
    assert len(foreign) == 2, foreign

    # One interval on a quiet machine; the deadline only has to be generous on a busy one.
    wait_for(lambda: RESTORED in [e["msg"] for e in a.log()], 120, f"{RESTORED!r}; log: {a.log()}")
    assert lab.reaches(WEB[0]) and lab.reaches(SSH[0])
    assert len(rules(lab, *WEB)) == 2 and len(rules(lab, *SSH)) == 2
    said = [e for e in a.log() if e["msg"].startswith("the router restarted (")]
    assert len(said) == 1 and "PCP epoch went from" in said[0]["msg"], said
    metrics = lab.run(lab.lan, "curl", "-sf", f"http://{LISTEN}/metrics", check=False).stdout
    assert "portctl_router_restarts_total 1.0" in metrics.splitlines(), metrics
    status = a.status()
    assert status["routerBoot"]["restarts"] == 1, status["routerBoot"]
    assert any(r["result"] == "changed" and r["reason"] == "RouterRestarted" for r in status["results"]), status
    assert rules(lab, *FOREIGN) == foreign
    assert a.stop() == 0
