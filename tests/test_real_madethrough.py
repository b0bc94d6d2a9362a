"""PCP and NAT-PMP rows in real miniupnpd's UPnP table, as portctl's UPnP plans read them.

miniupnpd lists a PCP mapping as `PCP MAP <nonce>` and a NAT-PMP one as `NAT-PMP <port> <proto>`.
portctl's own PCP mapping (made through pcp://) is claimed by a later UPnP plan of the same manifest;
Debian's natpmpc, as another app, makes mappings that stay foreign and untouched, and replaces a
portctl mapping when it asks for the same internal host:port, which the next plan names.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP, ROUTER_LAN_IP, Lab
from tests.test_real_pcp_backend import natpmpc, rules

pytestmark = pytest.mark.router
MANIFEST = """\
apiVersion: portctl/v1
owner: seen
defaults: {{lease: 10m, internal_client: auto}}
prune: true
mappings:
{rows}"""
TAKEN = "was taken over through NAT-PMP by {client}: the app on that host mapped the same internal port"

lab = module_lab("pw")  # UPnP on: PCP and NAT-PMP mappings show up in its table


def manifest(tmp_path: str, rows: dict[str, tuple[int, int]], extra: str = "") -> str:
    """A manifest of TCP `rows` (name -> external port, internal port)."""
    text = "".join(
        f"  - {{name: {name}, external_port: {ext}, internal_port: {internal}, protocol: tcp{extra}}}\n"
        for name, (ext, internal) in rows.items()
    )
    return write(tmp_path, MANIFEST.format(rows=text), f"{'-'.join(rows)}{len(extra)}.yaml")


def portctl(lab: Lab, *args: str, pcp: bool = False) -> subprocess.CompletedProcess[str]:
    router = ("--router", f"pcp://{ROUTER_LAN_IP}") if pcp else ("--router", lab.url)
    r = lab.portctl(*args, *router, "--no-color", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def rows_at(lab: Lab, *ports: int) -> set[tuple[int, str, str, int, str]]:
    """What upnpc lists at `ports`: external port, protocol, client, internal port, description."""
    return {row for row in lab.table() if row[0] in ports}


def test_a_pcp_mapping_portctl_made_is_claimed_by_a_later_upnp_plan(lab: Lab, tmp_path: str) -> None:
    """A mapping applied through pcp:// is recognised by its nonce in the UPnP table: the UPnP plan
    adds nothing beside it, says it was made through PCP, re-tags it, and it keeps forwarding."""
    web = (24001, 24011)
    path = manifest(tmp_path, {"web": web})
    r = portctl(lab, "apply", path, "--auto-approve", pcp=True)
    assert r.returncode == 0, r.stdout + r.stderr
    [made] = rows_at(lab, web[0])
    assert made[4].startswith("PCP MAP "), made

    plan = portctl(lab, "plan", path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "made through PCP by this owner" in plan.stdout
    assert "Plan: 0 to add, 1 to change, 0 to remove." in plan.stdout

    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    [row] = rows_at(lab, web[0])
    assert row[:4] == (web[0], "TCP", LAN_IP, web[1]) and row[4].startswith("pc:"), row
    lab.serve(web[1])
    assert lab.reaches(web[0])
    again = portctl(lab, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_natpmpc_mapping_is_foreign_labelled_and_untouched(lab: Lab, tmp_path: str) -> None:
    """natpmpc's mapping stays byte-identical (its upnpc row and nftables rules) through an apply, a
    prune and a destroy over UPnP, still forwards, and plans and `show` say what made it."""
    foreign, web, api = (24101, 24111), (24102, 24112), (24103, 24113)
    natpmpc(lab, *foreign, "tcp")
    before, before_rules = rows_at(lab, foreign[0]), rules(lab, *foreign)
    assert before == {(*foreign[:1], "TCP", LAN_IP, foreign[1], f"NAT-PMP {foreign[0]} tcp")}
    label = f"made through NAT-PMP by {LAN_IP}"

    first, second = manifest(tmp_path, {"web": web}), manifest(tmp_path, {"api": api})
    assert label in portctl(lab, "plan", first).stdout
    assert label in portctl(lab, "show", first).stdout
    for args in (("apply", first), ("apply", second), ("destroy", second)):
        r = portctl(lab, *args, "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
    assert rows_at(lab, web[0], api[0]) == set()
    assert rows_at(lab, foreign[0]) == before
    assert rules(lab, *foreign) == before_rules
    lab.serve(foreign[1])
    assert lab.reaches(foreign[0])


@pytest.mark.parametrize(("policy", "base"), [("fail", 24200), ("takeover", 24300), ("next_free", 24400)])
def test_natpmpc_replacing_a_portctl_mapping_is_named_and_on_conflict_decides(
    lab: Lab, tmp_path: str, policy: str, base: int
) -> None:
    """natpmpc on the same host, for the same internal port, replaces portctl's UPnP mapping; the next
    plan names the takeover, and on_conflict decides: fail leaves the app's row as it is, takeover
    takes the port back, next_free maps the next port beside the app's row."""
    web = (base + 1, base + 11)
    path = manifest(tmp_path, {"web": web}, f", on_conflict: {policy}")
    r = portctl(lab, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    natpmpc(lab, *web, "tcp")
    theirs = (web[0], "TCP", LAN_IP, web[1], f"NAT-PMP {web[0]} tcp")
    assert rows_at(lab, web[0]) == {theirs}  # the router replaced portctl's row: the case at hand
    taken_rules = rules(lab, *web)

    plan = portctl(lab, "plan", path)
    assert f"{web[0]}/tcp " + TAKEN.format(client=LAN_IP) in plan.stdout + plan.stderr

    r = portctl(lab, "apply", path, "--auto-approve")
    lab.serve(web[1])
    if policy == "fail":
        assert r.returncode != 0
        assert TAKEN.format(client=LAN_IP) in r.stdout + r.stderr
        assert rows_at(lab, web[0], web[0] + 1) == {theirs}
        assert rules(lab, *web) == taken_rules
        return
    assert r.returncode == 0, r.stdout + r.stderr
    ours = web[0] if policy == "takeover" else web[0] + 1
    [row] = rows_at(lab, ours) - {theirs}
    assert row[:4] == (ours, "TCP", LAN_IP, web[1]) and row[4].startswith("pc:"), row
    assert lab.reaches(ours)
    if policy == "next_free":
        assert theirs in rows_at(lab, web[0])
    again = portctl(lab, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
