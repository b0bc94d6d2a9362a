"""A lease shorter than real miniupnpd grants through PCP (its min_lifetime, 120 s by default), with
UPnP IGD off: portctl releases the grant at once and refuses it, so nothing is held longer than the
plan approved. What the router holds is read from its nftables chains and proven with real traffic.
"""

from __future__ import annotations

import pytest

from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import Lab
from tests.test_real_pcp_backend import MANIFEST, portctl, rules

pytestmark = pytest.mark.router

lab = module_lab("lm", upnp=False)


def test_a_one_minute_pcp_lease_is_refused_and_nothing_stays_mapped(lab: Lab, tmp_path: str) -> None:
    """miniupnpd grants a 60 s MAP 120 s: apply fails naming the lease to ask for, the router holds no
    rule for the port and forwards nothing to it, and the next plan still proposes the add."""
    external, internal = 22001, 22011
    row = f"  - {{name: brief, external_port: {external}, internal_port: {internal}, protocol: tcp, lease: 1m}}\n"
    path = write(tmp_path, MANIFEST.format(mode="pcp", rows=row), "brief.yaml")
    lab.serve(internal)

    r = portctl(lab, "pcp", "apply", path, "--auto-approve")
    assert r.returncode != 0, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert f"granted {external}/tcp a lifetime of 120 s" in said and "Ask for a lease of at least 120 s" in said, said
    assert rules(lab, external, internal) == set()
    assert not lab.reaches(external)

    again = portctl(lab, "pcp", "plan", path)
    assert "add" in again.stdout and f"{external}/tcp" in again.stdout, again.stdout + again.stderr
