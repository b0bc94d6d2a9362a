"""`portctl apply` of a manifest with an IPv6 pinhole, run on the LAN host of the dual-stack lab against
real miniupnpd, proved with real IPv6 TCP from the internet-side host: its port gets through and a
neighbouring one does not, a second plan has no changes, and removing it from the manifest closes it.
A pinhole miniupnpc's own client made for another port is never touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler.pinholestore import FILE
from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab

pytestmark = pytest.mark.router
MANIFEST = """\
apiVersion: portctl/v1
owner: lab6
mappings: []
pinholes:
{pinholes}
"""
WEB = "  - {name: web, internal_port: 18800}"


lab = module_lab("ph", ipv6=True)


def foreign_rules(lab: routerlab.Lab, port: int) -> list[str]:
    """The router's firewall rules for `port` (its nftables chain, read in its namespace), counters left out."""
    rules = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", "miniupnpd").stdout
    lines = [line.strip() for line in rules.splitlines() if f"th dport {port} " in line]
    return [re.sub(r"counter packets \d+ bytes \d+ ", "", line) for line in lines]


def test_apply_opens_the_pinhole_plan_is_then_empty_and_removal_closes_it(lab: routerlab.Lab, tmp_path: Path) -> None:
    """Through portctl alone: the declared port is reachable over IPv6 after apply and only it; the next
    plan (a new process, the same cache) has no changes; apply without it closes it again."""
    for port in (18800, 18801, 18802):
        lab.serve6(port)
    assert not lab.reaches6(18800), "the forward policy must drop IPv6 before any pinhole"
    other = lab.upnpc6("-A", "", "0", routerlab.LAN_IP6, "18802", "TCP", "3600")
    assert "Pinhole ID" in other.stdout, other.stdout + other.stderr
    theirs = foreign_rules(lab, 18802)
    assert theirs

    path = write(tmp_path, MANIFEST.format(pinholes=WEB))
    r = lab.portctl("apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{routerlab.LAN_IP6}]:18800/tcp" in r.stdout
    assert routerlab.eventually(lambda: lab.reaches6(18800))
    assert not lab.reaches6(18801)

    again = lab.portctl("plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout

    # A portctl that lost its records (another cache, a reinstall) finds the same pinhole, not a second one.
    ours = foreign_rules(lab, 18800)
    os.remove(os.path.join(os.environ["PORTCTL_CACHE_DIR"], FILE))
    found = lab.portctl("apply", path, "--auto-approve")
    assert found.returncode == 0, found.stdout + found.stderr
    assert foreign_rules(lab, 18800) == ours and len(ours) == 1
    assert "No changes" in lab.portctl("plan", path).stdout

    write(tmp_path, MANIFEST.format(pinholes="  []").replace("pinholes:\n  []", "pinholes: []"))
    closed = lab.portctl("apply", path, "--auto-approve")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "close" in closed.stdout
    assert routerlab.eventually(lambda: not lab.reaches6(18800))
    assert lab.reaches6(18802)
    assert foreign_rules(lab, 18802) == theirs
