"""on_conflict on real miniupnpd through PCP (UPnP IGD off) when another mapping holds the declared port.

natpmpc on the LAN host maps the port first, for another internal port (the lab has one LAN host; to
NAT-PMP and PCP a mapping is a host's internal port, so this is another application's mapping). PCP
then moves portctl's request to another external port: next_free keeps it where the plan's window
allows, fail releases it. With UPnP off nothing lists the table: what the router holds is read from
its nftables rules, and proven with real traffic from the internet-side namespace.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import Lab
from tests.test_real_pcp_backend import natpmpc, rules

pytestmark = pytest.mark.router
MANIFEST = """\
apiVersion: portctl/v1
owner: lab-nf
router: {{protocols: [pcp]}}
defaults: {{lease: 10m, internal_client: auto}}
mappings:
  - {{name: web, external_port: {port}, internal_port: {internal}, protocol: tcp{extra}}}
"""

lab = module_lab("nf", upnp=False)


def portctl(lab: Lab, *args: str) -> tuple[int, str]:
    r = lab.portctl(*args, "--no-color", "--timeout", "30", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout + r.stderr


def mentioning(lab: Lab, port: int) -> set[str]:
    """Every rule of miniupnpd's chains that names `port` anywhere (a dport, or a DNAT target)."""
    out = set()
    for chain in ("prerouting_miniupnpd", "miniupnpd"):
        listing = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", chain).stdout
        out |= {line.strip() for line in listing.splitlines() if re.search(rf"\b{port}\b", line)}
    return out


def test_next_free_keeps_the_port_the_router_granted(lab: Lab, tmp_path: str) -> None:
    """The saved plan shows the window; applying it keeps the moved grant and says where; traffic reaches
    portctl's server on the granted port; a second plan has no changes; the natpmpc mapping's rules
    are byte-identical and it still forwards."""
    port, foreign, mine = 22000, 22010, 22020
    natpmpc(lab, port, foreign, "tcp")
    before = rules(lab, port, foreign)
    assert len(before) == 2, before
    path = write(tmp_path, MANIFEST.format(port=port, internal=mine, extra=", on_conflict: next_free"), "m.yaml")

    saved = f"{tmp_path}/plan.json"
    code, out = portctl(lab, "plan", path, "--out", saved)
    assert code == 0, out
    assert f"the router may grant a port from {port} to {port + 100} (next_free)" in out

    code, out = portctl(lab, "apply", saved)
    assert code == 0, out
    said = re.search(rf"granted (\d+) instead of {port} \(next_free\)", out)
    assert said is not None, out
    granted = int(said.group(1))
    assert port < granted <= port + 100
    lab.serve(mine)
    assert lab.reaches(granted)

    code, out = portctl(lab, "plan", path, "--detailed-exitcode")
    assert code == 0, out
    assert "No changes" in out
    assert rules(lab, port, foreign) == before
    lab.serve(foreign)
    assert lab.reaches(port)

    code, out = portctl(lab, "destroy", path, "--auto-approve")
    assert code == 0, out
    assert mentioning(lab, mine) == set()
    assert rules(lab, port, foreign) == before


def test_on_conflict_fail_refuses_the_moved_grant_and_releases_it(lab: Lab, tmp_path: str) -> None:
    """Without next_free the moved grant is refused and released at once: nothing forwards to
    portctl's internal port, and the natpmpc mapping's rules are byte-identical."""
    port, foreign, mine = 22200, 22210, 22220
    natpmpc(lab, port, foreign, "tcp")
    before = rules(lab, port, foreign)
    assert len(before) == 2, before
    path = write(tmp_path, MANIFEST.format(port=port, internal=mine, extra=""), "m.yaml")

    code, out = portctl(lab, "apply", path, "--auto-approve")
    assert code != 0, out
    assert re.search(rf"PCP granted \d+ instead of {port}/tcp .*released again", out), out
    assert mentioning(lab, mine) == set()
    assert rules(lab, port, foreign) == before
