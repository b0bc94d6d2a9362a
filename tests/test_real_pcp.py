"""portctl's PCP and NAT-PMP client against real miniupnpd (PCP and NAT-PMP share its port 5351).

Each mapping is checked three ways: the router's answer, the row upnpc lists (with the description
portctl predicts for it), and real traffic from the internet-side namespace to a server on the LAN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from reconciler.backends.pcp.epoch import pcp_state_lost
from reconciler.backends.pcp.nonce import mapping_nonce, miniupnpd_description, natpmp_description
from tests import routerlab
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP, ROUTER_LAN_IP, ROUTER_WAN_IP, wait_for

pytestmark = pytest.mark.router
SECRET = bytes(range(32))
DENIED = "deny 18200-18299 192.168.77.0/24 1-65535"  # first match wins: these external ports are refused

# Echoes every datagram with a prefix; stops by itself after `lifetime` seconds.
_UDP_ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(0.5)
deadline = time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        data, peer = s.recvfrom(100)
    except socket.timeout:
        continue
    s.sendto(b"echo:" + data, peer)
"""
# Sends a datagram until an answer comes back (UDP may drop one under load), at most 30 tries.
_UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
for _ in range(30):
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(100)[0].decode()); break
    except socket.timeout:
        pass
else:
    print("no answer")
"""


lab = module_lab("pq", rules=(DENIED, *routerlab.OPEN_RULES))


def probe(lab: routerlab.Lab, **args: Any) -> dict[str, Any]:
    """One exchange made by portctl's client on the LAN host."""
    r = lab.run(lab.lan, sys.executable, "-m", "tests.pcpprobe", json.dumps({"gateway": ROUTER_LAN_IP, **args}))
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def nonce(name: str, protocol: str, port: int) -> bytes:
    return mapping_nonce(SECRET, "test", name, protocol, port)


def pcp_map(lab: routerlab.Lab, n: bytes, protocol: str, port: int, external: int, **extra: Any) -> dict[str, Any]:
    return probe(
        lab,
        op="map",
        nonce=n.hex(),
        protocol=protocol,
        internal_port=port,
        external_port=external,
        lifetime=extra.pop("lifetime", 600),
        **extra,
    )


def udp_echoes(lab: routerlab.Lab, port: int, external_port: int) -> bool:
    """Does a datagram from the internet host to the router's WAN port come back from the LAN host?"""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.lan, sys.executable, "-c", _UDP_ECHO, str(port), "120"], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        out = lab.run(lab.net, sys.executable, "-c", _UDP_SEND, ROUTER_WAN_IP, str(external_port)).stdout
        return out.strip() == "echo:ping"
    finally:
        server.kill()
        server.wait(10)


def test_pcp_map_tcp_forwards_traffic_and_delete_closes_it(lab: routerlab.Lab) -> None:
    """A PCP TCP mapping is granted as asked, listed with the predicted description, carries real
    traffic, and a lifetime-0 request with the same nonce removes it."""
    n = nonce("web", "TCP", 8101)
    granted = pcp_map(lab, n, "TCP", 8101, 18101, prefer_failure=True)
    assert (granted["result"], granted["external_port"], granted["external_address"]) == (
        "SUCCESS",
        18101,
        ROUTER_WAN_IP,
    )
    assert (18101, "TCP", LAN_IP, 8101, miniupnpd_description(n)) in lab.table()
    lab.serve(8101)
    assert lab.reaches(18101)

    assert pcp_map(lab, n, "TCP", 8101, 18101, lifetime=0)["result"] == "SUCCESS"
    assert not any(row[0] == 18101 for row in lab.table())
    assert not lab.reaches(18101)


def test_pcp_map_udp_forwards_datagrams(lab: routerlab.Lab) -> None:
    """A PCP UDP mapping is listed with the predicted description and echoes a datagram from the
    internet host; deleting it removes the row."""
    n = nonce("game", "UDP", 8102)
    assert pcp_map(lab, n, "UDP", 8102, 18102)["result"] == "SUCCESS"
    assert (18102, "UDP", LAN_IP, 8102, miniupnpd_description(n)) in lab.table()
    assert udp_echoes(lab, 8102, 18102)

    assert pcp_map(lab, n, "UDP", 8102, 18102, lifetime=0)["result"] == "SUCCESS"
    assert not any(row[0] == 18102 for row in lab.table())


def test_delete_with_another_nonce_is_not_authorized_and_changes_nothing(lab: routerlab.Lab) -> None:
    """A lifetime-0 request with another nonce gets NOT_AUTHORIZED and leaves the row byte-identical."""
    mine = nonce("ssh", "TCP", 8103)
    assert pcp_map(lab, mine, "TCP", 8103, 18103)["result"] == "SUCCESS"
    before = {row for row in lab.table() if row[0] == 18103}
    assert before == {(18103, "TCP", LAN_IP, 8103, miniupnpd_description(mine))}

    other = nonce("intruder", "TCP", 8103)
    assert pcp_map(lab, other, "TCP", 8103, 18103, lifetime=0)["result"] == "NOT_AUTHORIZED"
    assert {row for row in lab.table() if row[0] == 18103} == before

    assert pcp_map(lab, mine, "TCP", 8103, 18103, lifetime=0)["result"] == "SUCCESS"


def test_a_map_with_another_nonce_from_the_same_host_takes_the_mapping_over(lab: routerlab.Lab) -> None:
    """Measured on miniupnpd 2.3.1: a MAP (not a delete) with another nonce for the same host and
    internal port succeeds and re-labels the row with its nonce; the first holder's delete is then
    NOT_AUTHORIZED. A backend must read the description back to know the mapping is still its own."""
    mine, other = nonce("rdp", "TCP", 8107), nonce("other-app", "TCP", 8107)
    assert pcp_map(lab, mine, "TCP", 8107, 18107)["result"] == "SUCCESS"

    taken = pcp_map(lab, other, "TCP", 8107, 18107, prefer_failure=True)
    assert (taken["result"], taken["external_port"]) == ("SUCCESS", 18107)
    assert {row for row in lab.table() if row[0] == 18107} == {
        (18107, "TCP", LAN_IP, 8107, miniupnpd_description(other))
    }
    assert pcp_map(lab, mine, "TCP", 8107, 18107, lifetime=0)["result"] == "NOT_AUTHORIZED"
    assert pcp_map(lab, other, "TCP", 8107, 18107, lifetime=0)["result"] == "SUCCESS"


def test_prefer_failure_on_a_denied_port_fails_instead_of_moving(lab: routerlab.Lab) -> None:
    """With PREFER_FAILURE a port the router's rules deny is refused with CANNOT_PROVIDE_EXTERNAL and
    nothing is mapped; without it the router grants the next port its rules allow."""
    n = nonce("denied", "TCP", 8201)
    refused = pcp_map(lab, n, "TCP", 8201, 18201, prefer_failure=True)
    assert refused["result"] == "CANNOT_PROVIDE_EXTERNAL"
    assert {row for row in lab.table() if row[3] == 8201} == set()

    moved = pcp_map(lab, n, "TCP", 8201, 18201)
    assert (moved["result"], moved["external_port"]) == ("SUCCESS", 18300)
    assert {row for row in lab.table() if row[3] == 8201} == {(18300, "TCP", LAN_IP, 8201, miniupnpd_description(n))}
    assert pcp_map(lab, n, "TCP", 8201, 18300, lifetime=0)["result"] == "SUCCESS"


def test_a_port_another_mapping_holds_moves_even_with_prefer_failure(lab: routerlab.Lab) -> None:
    """Measured on Debian's miniupnpd 2.3.1 (built with CHECK_PORTINUSE): a port held by another
    client's mapping is skipped even with PREFER_FAILURE, so the granted port must be compared with
    the requested one. The foreign row stays byte-identical."""
    lab.add_foreign(18104, "TCP", "someone else", internal_port=9104)
    foreign = {row for row in lab.table() if row[0] == 18104}
    n = nonce("taken", "TCP", 8104)

    granted = pcp_map(lab, n, "TCP", 8104, 18104, prefer_failure=True)
    assert granted["result"] == "SUCCESS" and granted["external_port"] != 18104
    assert {row for row in lab.table() if row[0] == 18104} == foreign
    assert pcp_map(lab, n, "TCP", 8104, granted["external_port"], lifetime=0)["result"] == "SUCCESS"
    assert {row for row in lab.table() if row[0] == 18104} == foreign
    lab.upnpc("-d", "18104", "TCP")


def test_third_party_is_refused_where_the_router_does_not_allow_it(lab: routerlab.Lab) -> None:
    """THIRD_PARTY (a mapping for another host) gets UNSUPP_OPTION from miniupnpd without
    pcp_allow_thirdparty, and nothing is mapped."""
    n = nonce("nas", "TCP", 8108)
    refused = pcp_map(lab, n, "TCP", 8108, 18108, third_party="192.168.77.3")
    assert refused["result"] == "UNSUPP_OPTION"
    assert not any(row[0] == 18108 or row[3] == 8108 for row in lab.table())


def test_natpmp_map_forwards_traffic_and_delete_closes_it(lab: routerlab.Lab) -> None:
    """A NAT-PMP TCP mapping is granted as asked, listed as miniupnpd names NAT-PMP mappings,
    carries real traffic, and lifetime 0 removes it."""
    granted = probe(lab, op="natpmp-map", protocol="TCP", internal_port=8105, external_port=18105, lifetime=600)
    assert (granted["result"], granted["external_port"]) == ("SUCCESS", 18105)
    assert 0 < granted["lifetime"] <= 600
    assert (18105, "TCP", LAN_IP, 8105, natpmp_description(18105, "TCP")) in lab.table()
    lab.serve(8105)
    assert lab.reaches(18105)

    deleted = probe(lab, op="natpmp-map", protocol="TCP", internal_port=8105, lifetime=0)
    assert (deleted["result"], deleted["lifetime"]) == ("SUCCESS", 0)
    assert not any(row[0] == 18105 for row in lab.table())
    assert not lab.reaches(18105)


def test_natpmp_map_udp_uses_the_udp_opcode(lab: routerlab.Lab) -> None:
    """A NAT-PMP UDP request makes a UDP row (the opcode is not swapped) that echoes a datagram."""
    granted = probe(lab, op="natpmp-map", protocol="UDP", internal_port=8106, external_port=18106, lifetime=600)
    assert (granted["result"], granted["external_port"]) == ("SUCCESS", 18106)
    assert (18106, "UDP", LAN_IP, 8106, natpmp_description(18106, "UDP")) in lab.table()
    assert udp_echoes(lab, 8106, 18106)
    assert probe(lab, op="natpmp-map", protocol="UDP", internal_port=8106, lifetime=0)["result"] == "SUCCESS"
    assert not any(row[0] == 18106 for row in lab.table())


def test_announce_and_external_address_give_the_epoch(lab: routerlab.Lab) -> None:
    """ANNOUNCE answers SUCCESS with an epoch, NAT-PMP gives the WAN address, and after a restart of
    the router the RFC's epoch check says the state was lost (and not before)."""
    first = probe(lab, op="announce")
    assert first["result"] == "SUCCESS"
    address = probe(lab, op="natpmp-address")
    assert (address["result"], address["external_address"]) == ("SUCCESS", ROUTER_WAN_IP)
    assert address["epoch"] >= first["epoch"]
    again = probe(lab, op="announce")
    assert not pcp_state_lost(first["epoch"], first["at"], again["epoch"], again["at"])

    # The lab's miniupnpd starts its epoch at its own start (system_uptime=no). With 10 s behind it,
    # a restart is recognised even if the restart and the next answer take the machine 2 minutes.
    wait_for(lambda: probe(lab, op="announce")["epoch"] >= 10, 60, "the router's epoch to reach 10 s")
    before = probe(lab, op="announce")
    lab.stop_router()
    lab.start_router()
    after = probe(lab, op="announce")
    assert pcp_state_lost(before["epoch"], before["at"], after["epoch"], after["at"])
