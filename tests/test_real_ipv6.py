"""The dual-stack lab: IPv6 pinholes on real miniupnpd, proved with real IPv6 traffic from the internet side.

The router forwards IPv6 between documentation prefixes (2001:db8::/32) behind a forward policy that
drops: only a pinhole made through WANIPv6FirewallControl (here by miniupnpc's own client, for the LAN
host's own address, as miniupnpd insists) lets a connection from the internet host reach the LAN host.
"""

from __future__ import annotations

import re

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab

pytestmark = pytest.mark.router
LEASE = "3600"


lab = module_lab("p6", ipv6=True)


def add_pinhole(lab: routerlab.Lab, port: int) -> str:
    """A TCP pinhole from any remote host to the LAN host's own address and `port`; its UniqueID."""
    r = lab.upnpc6("-A", "", "0", routerlab.LAN_IP6, str(port), "TCP", LEASE)
    found = re.search(r"Pinhole ID = (\d+)", r.stdout)
    assert found, r.stdout + r.stderr
    return found.group(1)


def test_a_pinhole_lets_ipv6_tcp_reach_its_port_and_nothing_else(lab: routerlab.Lab) -> None:
    """Before the pinhole nothing gets through; after it, its port does and a neighbouring one does not."""
    lab.serve6(18600)
    lab.serve6(18601)
    assert not lab.reaches6(18600), "the forward policy must drop IPv6 before any pinhole"
    add_pinhole(lab, 18600)
    assert routerlab.eventually(lambda: lab.reaches6(18600))
    assert not lab.reaches6(18601)


def test_a_deleted_pinhole_closes_its_port_again(lab: routerlab.Lab) -> None:
    """DeletePinhole through upnpc stops the traffic the pinhole let in."""
    lab.serve6(18610)
    unique_id = add_pinhole(lab, 18610)
    assert routerlab.eventually(lambda: lab.reaches6(18610))
    r = lab.upnpc6("-D", unique_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not lab.reaches6(18610)


def test_ipv4_mappings_keep_working_on_the_dual_stack_lab(lab: routerlab.Lab, tmp_path: str) -> None:
    """portctl's IPv4 port mapping forwards real traffic on the same router that makes pinholes."""
    lab.serve(7301)
    path = write(tmp_path, "apiVersion: portctl/v1\nowner: lab6\nmappings:\n  - {name: web, external_port: 7301}\n")
    assert not lab.reaches(7301)
    r = lab.portctl("apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routerlab.eventually(lambda: lab.reaches(7301))
