"""IPv6 pinholes where the LAN host's IPv6 default route goes via the router's LINK-LOCAL address, as
router advertisements make it on real home networks, and the router is named by its IPv4 address alone.

portctl finds the router at `fe80::1%<device>` (the default route's hop and device) and speaks to it
from the LAN host's global address on that link, so the router opens the pinhole for that address:
through UPnP's WANIPv6FirewallControl (`--router http://192.168.77.1:5000/...`), and through PCP with
UPnP off (`--router pcp://192.168.77.1`). Proved with real IPv6 TCP from the internet-side host.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import Variant, module_lab
from tests.routerlab import LAN_IP6, ROUTER_LAN_IP, ROUTER_LINK_LOCAL, Lab

pytestmark = pytest.mark.router
MANIFEST = """\
apiVersion: portctl/v1
owner: linklocal
mappings: []
pinholes:
{pinholes}
"""
PORT = 18830
SERVICES: dict[str, Variant] = {"upnp": ("u", {"upnp": True}), "pcp": ("p", {"upnp": False})}

lab = module_lab("ll", SERVICES, ipv6=True, ipv6_link_local_gateway=True)


def portctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """portctl on the LAN host, given the router's IPv4 address only: its UPnP description, or PCP."""
    if lab.upnp:
        r = lab.portctl(*args, "--no-color")
    else:
        r = lab.portctl(*args, "--router", f"pcp://{ROUTER_LAN_IP}", "--no-color", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def pinhole_rules(lab: Lab, port: int) -> list[str]:
    """The router's pinhole rules for `port` (its nftables chain), counters left out."""
    rules = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", "miniupnpd").stdout
    lines = [line.strip() for line in rules.splitlines() if f"th dport {port} " in line]
    return [re.sub(r"counter packets \d+ bytes \d+ ", "", line) for line in lines]


def test_a_pinhole_opens_through_a_link_local_gateway_plan_is_then_empty_and_removal_closes_it(
    lab: Lab, tmp_path: Path
) -> None:
    """With no IPv6 router URL and a link-local default gateway, apply opens the pinhole for the LAN
    host's global address (its port reachable over IPv6, a neighbouring one not), the next plan has no
    changes, and a manifest without it closes it."""
    default = lab.run(lab.lan, "ip", "-6", "route", "show", "default").stdout
    assert f"via {ROUTER_LINK_LOCAL} " in default, default
    for port in (PORT, PORT + 1):
        lab.serve6(port)
    assert not lab.reaches6(PORT), "the forward policy must drop IPv6 before any pinhole"
    path = write(tmp_path, MANIFEST.format(pinholes=f"  - {{name: web, internal_port: {PORT}}}"))

    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{LAN_IP6}]:{PORT}/tcp" in r.stdout
    assert f"(through {'UPnP' if lab.upnp else 'PCP'})" in r.stdout
    assert routerlab.eventually(lambda: lab.reaches6(PORT))
    assert not lab.reaches6(PORT + 1)
    assert len(pinhole_rules(lab, PORT)) == 1

    again = portctl(lab, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    write(tmp_path, MANIFEST.format(pinholes="  []").replace("pinholes:\n  []", "pinholes: []"))
    closed = portctl(lab, "apply", path, "--auto-approve")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "close" in closed.stdout
    assert pinhole_rules(lab, PORT) == []
    assert routerlab.eventually(lambda: not lab.reaches6(PORT))
