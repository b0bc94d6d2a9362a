"""PCP THIRD_PARTY on real miniupnpd with UPnP IGD off: portctl on one LAN host maps a port to another.

With `pcp_allow_thirdparty=yes` the mapping is made, carries real traffic from the internet-side
namespace to the second LAN host, plans clean and is pruned; without it, apply refuses with one message
and records nothing. A mapping natpmpc made is never touched. What the router holds is read from its
nftables rules (test_real_pcp_backend.rules): nothing can list the table with UPnP off.
"""

from __future__ import annotations

import subprocess

import pytest

from reconciler.cache import Cache
from reconciler.ownerstore import InventoryStore
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN2_IP, LAN_IP, ROUTER_LAN_IP, Lab, eventually
from tests.test_real_pcp_backend import natpmpc, rules

pytestmark = pytest.mark.router
OWNER = "lab-third"
REMEDY = "the router does not map ports for other hosts through PCP (miniupnpd: pcp_allow_thirdparty=yes)"
MANIFEST = """\
apiVersion: portctl/v1
owner: lab-third
router: {{protocols: [pcp]}}
defaults: {{lease: 10m}}
prune: true
mappings:
{rows}"""

allowed = module_lab("tpa", upnp=False, second_host=True, pcp_third_party=True)
refusing = module_lab("tpr", upnp=False, second_host=True)


def manifest(tmp_path: str, rows: dict[str, tuple[int, str, int]], name: str) -> str:
    """A manifest of TCP `rows` (name -> external port, internal client, internal port)."""
    text = "".join(
        f"  - {{name: {n}, external_port: {ext}, internal_client: {client}, internal_port: {port}, protocol: tcp}}\n"
        for n, (ext, client, port) in rows.items()
    )
    return write(tmp_path, MANIFEST.format(rows=text), name)


def portctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """portctl on the first LAN host, finding the gateway itself (router.protocols says PCP)."""
    r = lab.portctl(*args, "--no-color", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def everything(lab: Lab) -> dict[str, str]:
    """Every chain miniupnpd writes, as nft lists it: the router's whole table."""
    return {
        chain: lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", chain).stdout
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd")
    }


def test_a_mapping_for_another_host_forwards_to_it_and_plans_clean(allowed: Lab, tmp_path: str) -> None:
    """apply on the first LAN host maps a port to the second one through THIRD_PARTY: its rules name
    the second host, traffic from the internet side reaches the server there, a second plan has no
    changes, and natpmpc's mapping stays byte-identical."""
    foreign = (23001, 23011)
    natpmpc(allowed, *foreign, "tcp")
    before = rules(allowed, *foreign)
    assert len(before) == 2, before
    nas = (23002, LAN2_IP, 23012)
    path = manifest(tmp_path, {"nas": nas}, "nas.yaml")
    allowed.serve(nas[2], host=allowed.lan2)
    assert not allowed.reaches(nas[0])

    r = portctl(allowed, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    held = rules(allowed, nas[0], nas[2])
    assert any(line.endswith(f"dnat ip to {LAN2_IP}:{nas[2]}") for line in held), held
    assert eventually(lambda: allowed.reaches(nas[0]))
    again = portctl(allowed, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert rules(allowed, *foreign) == before


def test_a_mapping_for_another_host_removed_from_the_manifest_is_deleted(allowed: Lab, tmp_path: str) -> None:
    """Dropping the other host's mapping from the manifest deletes it on apply (a THIRD_PARTY delete
    with the same nonce): its rules are gone and traffic stops, while this host's mapping and
    natpmpc's stay as they were."""
    foreign, nas, web = (23101, 23111), (23102, LAN2_IP, 23112), (23103, LAN_IP, 23113)
    natpmpc(allowed, *foreign, "tcp")
    before = rules(allowed, *foreign)
    allowed.serve(nas[2], host=allowed.lan2)
    allowed.serve(web[2])
    first = portctl(allowed, "apply", manifest(tmp_path, {"nas": nas, "web": web}, "both.yaml"), "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    assert eventually(lambda: allowed.reaches(nas[0]))
    kept = rules(allowed, web[0], web[2])

    r = portctl(allowed, "apply", manifest(tmp_path, {"web": web}, "web.yaml"), "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nas" in r.stdout
    assert rules(allowed, nas[0], nas[2]) == set()
    assert not allowed.reaches(nas[0])
    assert rules(allowed, web[0], web[2]) == kept
    assert rules(allowed, *foreign) == before
    assert portctl(allowed, "destroy", manifest(tmp_path, {"web": web}, "web.yaml"), "--auto-approve").returncode == 0


def test_a_router_without_third_party_refuses_with_one_message(refusing: Lab, tmp_path: str, router_cache: str) -> None:
    """Without pcp_allow_thirdparty: apply exits non-zero with one message naming the mapping, the
    result code and the remedy, no traceback; nothing is recorded, the next plan still proposes the
    add, and the router's table (natpmpc's mapping included) is as it was."""
    natpmpc(refusing, 23201, 23211, "tcp")
    before = everything(refusing)
    path = manifest(tmp_path, {"nas": (23202, LAN2_IP, 23212)}, "nas.yaml")

    r = portctl(refusing, "apply", path, "--auto-approve")
    said = r.stdout + r.stderr
    assert r.returncode != 0, said
    assert said.count(REMEDY) == 1, said
    assert f"PCP refused to map 23202/tcp for {LAN2_IP}: 5 UNSUPP_OPTION" in said
    assert f"run portctl on {LAN2_IP}" in said and "nas" in said
    assert everything(refusing) == before
    assert InventoryStore(Cache(router_cache), f"pcp:{ROUTER_LAN_IP}").owned(OWNER) == {}

    plan = portctl(refusing, "plan", path, "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "nas" in plan.stdout and "23202" in plan.stdout
