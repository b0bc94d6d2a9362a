"""portctl plan and apply through pcp:// and natpmp:// against real miniupnpd with UPnP IGD off.

With UPnP off nothing can list the router's table: what the router holds is read from its nftables
rules (the NAT and filter chains miniupnpd writes) and proven with real traffic from the
internet-side namespace. Another client's mapping is made with Debian's natpmpc.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import ROUTER_LAN_IP, Lab
from tests.test_real_pcp import udp_echoes

pytestmark = pytest.mark.router
MODES = {"pcp": 20000, "natpmp": 21000}  # each protocol's own port range, so the two never meet
MANIFEST = """\
apiVersion: portctl/v1
owner: lab-{mode}
defaults: {{lease: 10m, internal_client: auto}}
prune: true
mappings:
{rows}"""


lab = module_lab("pb", upnp=False)


def manifest(tmp_path: str, mode: str, rows: dict[str, tuple[int, int, str]], lease: str = "") -> str:
    """A manifest file of `rows` (name -> external port, internal port, protocol)."""
    text = "".join(
        f"  - {{name: {name}, external_port: {ext}, internal_port: {internal}, protocol: {proto}{lease}}}\n"
        for name, (ext, internal, proto) in rows.items()
    )
    return write(tmp_path, MANIFEST.format(mode=mode, rows=text), f"{mode}-{'-'.join(rows)}.yaml")


def portctl(lab: Lab, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = lab.portctl(*args, "--router", f"{mode}://{ROUTER_LAN_IP}", "--no-color", router=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def rules(lab: Lab, *ports: int) -> set[str]:
    """The router's nftables rules (NAT and filter) that name any of `ports`: what it holds for them."""
    out = set()
    for chain in ("prerouting_miniupnpd", "miniupnpd"):
        listing = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", chain).stdout
        out |= {line.strip() for line in listing.splitlines() if any(f"dport {p} " in line for p in ports)}
    return out


def natpmpc(lab: Lab, external: int, internal: int, protocol: str, lifetime: int = 600) -> None:
    r = lab.run(lab.lan, "natpmpc", "-g", ROUTER_LAN_IP, "-a", str(external), str(internal), protocol, str(lifetime))
    assert f"Mapped public port {external}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_apply_forwards_tcp_and_udp_and_a_second_plan_has_no_changes(lab: Lab, tmp_path: str, mode: str) -> None:
    """apply maps a TCP and a UDP port through the protocol; real traffic from the internet side
    reaches the LAN servers through both, and a second plan exits 0 with nothing to do."""
    base = MODES[mode]
    web, game = (base + 1, base + 11), (base + 2, base + 12)
    path = manifest(tmp_path, mode, {"web": (*web, "tcp"), "game": (*game, "udp")})
    lab.serve(web[1])
    assert not lab.reaches(web[0])

    r = portctl(lab, mode, "apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.reaches(web[0])
    assert udp_echoes(lab, game[1], game[0])
    again = portctl(lab, mode, "plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_mapping_removed_from_the_manifest_is_pruned_and_stops_forwarding(lab: Lab, tmp_path: str, mode: str) -> None:
    """Dropping a mapping from the manifest deletes it on apply: its rules are gone and no traffic
    passes, while the one still declared keeps forwarding."""
    base = MODES[mode] + 100
    web, ssh = (base + 1, base + 11), (base + 2, base + 12)
    both = manifest(tmp_path, mode, {"web": (*web, "tcp"), "ssh": (*ssh, "tcp")})
    assert portctl(lab, mode, "apply", both, "--auto-approve").returncode == 0
    lab.serve(web[1])
    lab.serve(ssh[1])
    assert lab.reaches(ssh[0])

    r = portctl(lab, mode, "apply", manifest(tmp_path, mode, {"web": (*web, "tcp")}), "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ssh" in r.stdout
    assert rules(lab, ssh[0], ssh[1]) == set()
    assert not lab.reaches(ssh[0])
    assert lab.reaches(web[0])


@pytest.mark.parametrize("mode", MODES)
def test_another_clients_natpmp_mapping_is_never_touched(lab: Lab, tmp_path: str, mode: str) -> None:
    """A mapping natpmpc made on the same host stays byte-identical (its nftables rules) through an
    apply, a prune (another manifest) and a destroy of portctl's own, and still forwards."""
    base = MODES[mode] + 200
    foreign, web, api = (base + 1, base + 11), (base + 2, base + 12), (base + 3, base + 13)
    natpmpc(lab, *foreign, "tcp")
    before = rules(lab, *foreign)
    assert len(before) == 2, before
    lab.serve(foreign[1])

    first = manifest(tmp_path, mode, {"web": (*web, "tcp")})
    second = manifest(tmp_path, mode, {"api": (*api, "tcp")})
    for args in (("apply", first), ("apply", second), ("destroy", second)):
        r = portctl(lab, mode, *args, "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
    assert rules(lab, *web, *api) == set()
    assert rules(lab, *foreign) == before
    assert lab.reaches(foreign[0])


@pytest.mark.parametrize("mode", MODES)
def test_a_permanent_lease_is_refused_before_any_write(lab: Lab, tmp_path: str, mode: str) -> None:
    """lease: permanent on PCP or NAT-PMP: apply exits non-zero with one message naming the remedy,
    and the router holds nothing for the port."""
    base = MODES[mode] + 300
    path = manifest(tmp_path, mode, {"web": (base + 1, base + 11, "tcp")}, lease=", lease: permanent")
    r = portctl(lab, mode, "apply", path, "--auto-approve")
    assert r.returncode != 0
    assert "no permanent lease" in r.stdout + r.stderr
    assert "allow_permanent" in r.stdout + r.stderr
    assert rules(lab, base + 1, base + 11) == set()


def test_the_lab_serves_no_upnp(lab: Lab) -> None:
    """UPnP really is off: the description URL is not served, so every mapping here went through
    PCP or NAT-PMP."""
    probe = f"import urllib.request; urllib.request.urlopen({lab.url!r}, timeout=5)"
    assert lab.run(lab.lan, sys.executable, "-c", probe, check=False).returncode != 0
