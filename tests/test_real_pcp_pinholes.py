"""IPv6 pinholes through PCP on real miniupnpd with UPnP IGD off, run on the LAN host of the
dual-stack lab and proved with real IPv6 TCP from the internet-side host.

With UPnP off, only PCP can open a pinhole: `portctl apply --router pcp://ROUTER` sends a MAP for
the LAN host's own IPv6 address over IPv6 to the router's IPv6 address (this host's IPv6 default
gateway). What the router holds is read from its nftables chain and proven with traffic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.pinholestore import FILE
from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP6, ROUTER_LAN_IP, ROUTER_LAN_IP6, Lab

pytestmark = pytest.mark.router
MANIFEST = """\
apiVersion: portctl/v1
owner: lab6pcp
mappings: []
pinholes:
{pinholes}
"""


lab = module_lab("pp", ipv6=True, upnp=False)


def portctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    r = lab.portctl(*args, "--router", f"pcp://{ROUTER_LAN_IP}", "--no-color", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def foreign_pinhole(lab: Lab, port: int, lifetime: int = 600) -> dict[str, Any]:
    """A pinhole another PCP client on the LAN host makes for `port` (its own nonce), for 10 minutes;
    with `lifetime` 0, that client's close of it (the answer is returned, whatever it is)."""
    args = {"op": "map", "gateway": ROUTER_LAN_IP6, "nonce": "a5" * 12, "protocol": "TCP"}
    args |= {"internal_port": port, "external_port": port, "lifetime": lifetime}
    r = lab.run(lab.lan, sys.executable, "-m", "tests.pcpprobe", json.dumps(args))
    answer: dict[str, Any] = json.loads(r.stdout)
    assert lifetime == 0 or answer["result"] == "SUCCESS", answer
    return answer


def pinhole_rules(lab: Lab, port: int) -> list[str]:
    """The router's pinhole rules for `port` (its nftables chain), counters left out."""
    rules = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", "miniupnpd").stdout
    lines = [line.strip() for line in rules.splitlines() if f"th dport {port} " in line]
    return [re.sub(r"counter packets \d+ bytes \d+ ", "", line) for line in lines]


def test_apply_opens_a_pcp_pinhole_plan_is_then_empty_and_removal_closes_it(lab: Lab, tmp_path: Path) -> None:
    """Through PCP alone: the declared port is reachable over IPv6 after apply, a neighbouring one is
    not; the next plan has no changes; a portctl that lost its records finds the same pinhole again
    without a second one; a renewal keeps it open and closable (miniupnpd forgets the nonce of a
    pinhole extended in place); a manifest without it closes it. Another client's pinhole stays."""
    for port in (18900, 18901, 18902):
        lab.serve6(port)
    assert not lab.reaches6(18900), "the forward policy must drop IPv6 before any pinhole"
    foreign_pinhole(lab, 18902)
    theirs = pinhole_rules(lab, 18902)
    assert routerlab.eventually(lambda: lab.reaches6(18902))
    path = write(tmp_path, MANIFEST.format(pinholes="  - {name: web, internal_port: 18900, lease: 30m}"))

    plan = portctl(lab, "plan", path)
    assert "through PCP" in plan.stdout, plan.stdout + plan.stderr
    assert f"[{LAN_IP6}]:18900/tcp" in plan.stdout
    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routerlab.eventually(lambda: lab.reaches6(18900))
    assert not lab.reaches6(18901)
    ours = pinhole_rules(lab, 18900)
    assert len(ours) == 1, ours

    again = portctl(lab, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    os.remove(os.path.join(os.environ["PORTCTL_CACHE_DIR"], FILE))
    found = portctl(lab, "apply", path, "--auto-approve")
    assert found.returncode == 0, found.stdout + found.stderr
    assert pinhole_rules(lab, 18900) == ours

    write(tmp_path, MANIFEST.format(pinholes="  - {name: web, internal_port: 18900, lease: 40m}"))
    renewed = portctl(lab, "apply", path, "--auto-approve")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "renew, closed and mapped again, lease 40m" in renewed.stdout
    assert pinhole_rules(lab, 18900) == ours
    assert lab.reaches6(18900)

    write(tmp_path, MANIFEST.format(pinholes="  []").replace("pinholes:\n  []", "pinholes: []"))
    closed = portctl(lab, "apply", path, "--auto-approve")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "close" in closed.stdout
    assert pinhole_rules(lab, 18900) == []
    assert not lab.reaches6(18900)
    assert pinhole_rules(lab, 18902) == theirs
    assert lab.reaches6(18902)


def test_a_pinhole_another_pcp_client_holds_is_never_closed(lab: Lab, tmp_path: Path) -> None:
    """Another client on this host holds the pinhole portctl is asked for (another nonce): portctl's
    first close is refused and it sends nothing more, so apply fails saying so; the pinhole's rule is
    byte-identical, traffic still passes, nothing is recorded, and the other client can still close its
    own pinhole (a MAP from portctl would have extended it in place and made the router forget its nonce)."""
    lab.serve6(18930)
    foreign_pinhole(lab, 18930)
    theirs = pinhole_rules(lab, 18930)
    path = write(tmp_path, MANIFEST.format(pinholes="  - {name: shared, internal_port: 18930}"))
    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "held by another client (or extended in place before): not opened" in r.stdout, r.stdout + r.stderr
    assert pinhole_rules(lab, 18930) == theirs
    assert lab.reaches6(18930)
    write(tmp_path, MANIFEST.format(pinholes="  []").replace("pinholes:\n  []", "pinholes: []"))
    after = portctl(lab, "plan", path, "--detailed-exitcode")
    assert after.returncode == 0, after.stdout + after.stderr  # nothing recorded: nothing to close

    closed = foreign_pinhole(lab, 18930, lifetime=0)
    assert closed["result"] == "SUCCESS", closed
    assert pinhole_rules(lab, 18930) == []


def test_a_pcp_pinhole_with_a_remote_filter_is_refused_before_any_write(lab: Lab, tmp_path: Path) -> None:
    """PCP opens a pinhole to every remote host: one declared for one remote host is refused by the
    admission gate with the remedy, and nothing reaches the router."""
    lab.serve6(18910)
    text = f"  - {{name: only, internal_port: 18910, remote_host: '{routerlab.NET_IP6}'}}"
    path = write(tmp_path, MANIFEST.format(pinholes=text))
    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode != 0
    assert "PCP opens a pinhole to every remote host" in r.stdout + r.stderr
    assert pinhole_rules(lab, 18910) == []
    assert not lab.reaches6(18910)


def test_a_lease_shorter_than_the_router_grants_is_closed_again_and_refused(lab: Lab, tmp_path: Path) -> None:
    """miniupnpd grants a PCP pinhole at least its min_lifetime (120 s): a 60 s lease would be held
    longer than approved, so portctl closes it at once and says what lease to ask for."""
    lab.serve6(18920)
    path = write(tmp_path, MANIFEST.format(pinholes="  - {name: brief, internal_port: 18920, lease: 1m}"))
    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Ask for a lease of at least 120 s" in r.stdout + r.stderr
    assert pinhole_rules(lab, 18920) == []
    assert not lab.reaches6(18920)
    retry = portctl(lab, "plan", path)
    assert "open" in retry.stdout, retry.stdout  # nothing was recorded as held
