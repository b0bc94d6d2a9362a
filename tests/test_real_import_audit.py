"""import and audit on real miniupnpd: other apps' mappings planted with upnpc and natpmpc.

audit finds each planted case (a permanent lease, a sensitive port, many mappings to one host, a
mapping to an address nothing answers on, a NAT-PMP mapping) and nothing else; import of two selected
mappings then apply makes them owned (upnpc -l shows the tag) and forwarding as before, with every
other row byte-identical; `audit --clean` deletes only the row selected, and refuses the NAT-PMP one.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP, Lab, eventually
from tests.test_real_pcp_backend import natpmpc, rules

pytestmark = pytest.mark.router

lab = module_lab("au")
SILENT = "192.168.77.50"  # on the LAN's subnet, held by no namespace: nothing answers there
PLANTED = (31001, 31022, 31003, 31004, 31005, 31006)


def portctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    r = lab.portctl(*args, "--no-color")
    assert "Traceback" not in r.stderr, r.stderr
    return r


def plant(lab: Lab) -> None:
    """Other apps' mappings, as the brief lists them, on an empty table."""
    lab.empty_table()
    for desc, client, internal, external, lease in (
        ("perm app", LAN_IP, 31001, 31001, "0"),
        ("ssh app", LAN_IP, 22, 31022, "3600"),
        ("game one", LAN_IP, 31003, 31003, "3600"),
        ("game two", LAN_IP, 31004, 31004, "3600"),
        ("gone app", SILENT, 31005, 31005, "3600"),
    ):
        r = lab.upnpc("-e", desc, "-a", client, str(internal), str(external), "TCP", lease)
        assert "is redirected" in r.stdout, r.stdout + r.stderr
    natpmpc(lab, 31006, 31006, "tcp")
    assert {row[0] for row in lab.table()} == set(PLANTED)


def test_audit_finds_each_planted_case_and_nothing_else(lab: Lab) -> None:
    plant(lab)
    r = portctl(lab, "audit", "--json", "--detailed-exitcode")
    assert r.returncode == 2, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    found = {(f["kind"], f["subject"]) for f in doc["findings"]}
    assert found == {
        *(("undeclared", f"{port}/tcp") for port in PLANTED),
        ("permanent", "31001/tcp"),
        ("sensitive", "31022/tcp"),
        ("crowded", LAN_IP),
        ("no-answer", "31005/tcp"),
        ("made-through", "31006/tcp"),
    }
    [crowded] = [f for f in doc["findings"] if f["kind"] == "crowded"]
    assert sorted(row["key"]["external_port"] for row in crowded["rows"]) == [31001, 31003, 31004, 31006, 31022]
    assert set(doc["probed"]) == {SILENT, LAN_IP} and doc["unprobed"] == []


def test_audit_clean_refuses_a_natpmp_row_and_leaves_the_router_as_it_was(lab: Lab) -> None:
    """A mapping made through NAT-PMP (natpmpc here; portctl's natpmp:// looks the same) is not cleaned:
    its owner cannot be read from the row. upnpc -l and the router's rules are unchanged."""
    plant(lab)
    before, rules_before = lab.table(), rules(lab, *PLANTED)
    r = portctl(lab, "audit", "--clean", "--select", "31006/tcp", "--select", "31003/tcp", "--auto-approve")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "31006/tcp 'NAT-PMP 31006 tcp': made through NAT-PMP: its owner cannot be read" in r.stderr, r.stderr
    assert "Nothing was deleted" in r.stderr
    assert lab.table() == before and rules(lab, *PLANTED) == rules_before


def test_import_then_apply_takes_over_the_selected_rows_and_nothing_else(lab: Lab, tmp_path: str) -> None:
    """Two imported mappings become owned, forward the same traffic, every other row (upnpc -l and
    the router's rules) stays as it was, a second plan has no changes, and audit --clean deletes
    only the row it is given."""
    plant(lab)
    for port in (31003, 31004):
        lab.serve(port)
        assert eventually(lambda port=port: lab.reaches(port))  # type: ignore[misc]
    others = [p for p in PLANTED if p not in (31003, 31004)]
    before = {row for row in lab.table() if row[0] in others}
    rules_before = rules(lab, *others)

    out = os.path.join(tmp_path, "entries.yaml")
    r = portctl(lab, "import", "--select", "31003/tcp", "--select", "31004/tcp", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out) as f:
        path = write(tmp_path, f"apiVersion: portctl/v1\nowner: imported-au\nmappings:\n{f.read()}", "m.yaml")
    assert portctl(lab, "validate", path).returncode == 0

    plan = portctl(lab, "plan", path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.count("the port closes for a moment") == 2
    assert "Plan: 0 to add, 2 to change, 0 to remove." in plan.stdout

    applied = portctl(lab, "apply", path, "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    taken = {row[0]: row for row in lab.table() if row[0] in (31003, 31004)}
    for port in (31003, 31004):
        assert taken[port][:4] == (port, "TCP", LAN_IP, port) and taken[port][4].startswith("pc:"), taken
        assert eventually(lambda port=port: lab.reaches(port))  # type: ignore[misc]
    assert {row for row in lab.table() if row[0] in others} == before
    assert rules(lab, *others) == rules_before
    again = portctl(lab, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    cleaned = portctl(lab, "audit", "--clean", "--select", "31005/tcp", "--auto-approve")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    left = lab.table()
    assert {row[0] for row in left} == set(PLANTED) - {31005}
    assert {row for row in left if row[0] in others} == {row for row in before if row[0] != 31005}
