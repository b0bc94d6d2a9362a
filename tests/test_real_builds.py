"""The core cycle on both of Debian's real miniupnpd builds: nftables (installed) and iptables (unpacked).

The builds share miniupnpd's SOAP code but not its rule store (the iptables one lists oldest first, the
nftables one newest first), so each is checked for what a user relies on: plan, apply, a plan with no
changes, real traffic from the internet host, removal that stops forwarding, and a foreign mapping that
comes through unchanged.
"""

from __future__ import annotations

import os

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import MINIUPNPD_BUILDS, module_lab

pytestmark = pytest.mark.router
FOREIGN = (6100, "TCP", "Xbox Live (another device)")


def manifest(*ports: int) -> str:
    return "apiVersion: portctl/v1\nowner: lab6\nmappings:\n" + "".join(
        f"  - {{name: m{port}, external_port: {port}}}\n" for port in ports
    )


lab = module_lab("pi", MINIUPNPD_BUILDS)


@pytest.fixture
def clean(lab: routerlab.Lab) -> routerlab.Lab:
    """The router with an empty table plus one foreign mapping made by another client."""
    for port, proto, *_ in lab.table():
        lab.upnpc("-d", str(port), proto)
    routerlab.wait_for(lambda: not lab.table(), 30, "the table to empty")
    lab.add_foreign(*FOREIGN)
    return lab


def foreign_rows(lab: routerlab.Lab) -> set[tuple[int, str, str, int, str]]:
    return {row for row in lab.table() if row[0] == FOREIGN[0]}


def test_plan_apply_plan_forwards_real_traffic(clean: routerlab.Lab, tmp_path: str) -> None:
    """Plan shows two additions, apply makes them forward, and the next plan has nothing to do."""
    clean.serve(7201)
    clean.serve(7202)
    path = write(tmp_path, manifest(7201, 7202))
    assert not clean.reaches(7201) and not clean.reaches(7202)
    plan = clean.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Plan: 2 to add, 0 to change, 0 to remove." in plan.stdout
    r = clean.portctl("apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routerlab.eventually(lambda: clean.reaches(7201) and clean.reaches(7202))
    again = clean.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.rstrip().endswith("Plan: 0 to add, 0 to change, 0 to remove.")


def test_removed_mapping_stops_forwarding(clean: routerlab.Lab, tmp_path: str) -> None:
    """A mapping dropped from the manifest is deleted by apply, and its port closes; the other stays open."""
    clean.serve(7211)
    clean.serve(7212)
    path = write(tmp_path, manifest(7211, 7212))
    assert clean.portctl("apply", path, "--auto-approve").returncode == 0
    write(tmp_path, manifest(7211))
    r = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {row[0] for row in clean.table()} == {7211, FOREIGN[0]}
    assert routerlab.eventually(lambda: clean.reaches(7211))
    assert not clean.reaches(7212)


def test_foreign_mapping_is_untouched_by_apply_and_destroy(clean: routerlab.Lab, tmp_path: str) -> None:
    """Another client's mapping is byte-identical after apply and destroy, and still forwards."""
    clean.serve(FOREIGN[0])
    before = foreign_rows(clean)
    path = write(tmp_path, manifest(7201, 7202))
    assert clean.portctl("apply", path, "--auto-approve").returncode == 0
    assert foreign_rows(clean) == before
    r = clean.portctl("destroy", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert clean.table() == before
    assert routerlab.eventually(lambda: clean.reaches(FOREIGN[0]))


def test_the_lab_runs_the_build_it_names(clean: routerlab.Lab, tmp_path: str) -> None:
    """An applied mapping lands in the named build's own rule store, so both builds really are exercised."""
    assert clean.portctl("apply", write(tmp_path, manifest(7221)), "--auto-approve").returncode == 0
    nft = clean.run(clean.rtr, "nft", "list", "ruleset").stdout
    if clean.build == "nftables":
        assert "dport 7221" in nft
    else:
        save = os.path.join(routerlab.iptables_dir(), "usr/sbin/iptables-legacy-save")
        legacy = clean.run(clean.rtr, save, "-t", "nat", env=clean.iptables_env()).stdout
        assert "-A MINIUPNPD" in legacy and "--dport 7221" in legacy
        assert "7221" not in nft
