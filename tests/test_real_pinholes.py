"""portctl's IPv6 pinhole client (UPnP WANIPv6FirewallControl) against real miniupnpd on the dual-stack lab.

Each pinhole is made by portctl's own client on the LAN host (tests/pinholeprobe.py, run in the LAN
namespace so requests leave from the LAN host's address) and proved with real IPv6 TCP from the
internet-side host, whose traffic the router's forward policy drops unless a pinhole lets it in.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests import routerlab
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP6

pytestmark = pytest.mark.router
SHORT_LEASE = 20  # seconds: long enough for the update to arrive first on a busy machine
SECOND_IP6 = "2001:db8:77::3"  # a second address the tests give the LAN host


lab = module_lab("pn", ipv6=True)


@pytest.fixture
def second_address(lab: routerlab.Lab) -> Iterator[str]:
    """SECOND_IP6 on the LAN host's interface for one test (no duplicate address detection: usable at once)."""
    dev = f"{lab.prefix}l0"
    lab.run(lab.lan, "ip", "-6", "addr", "add", f"{SECOND_IP6}/64", "dev", dev, "nodad")
    try:
        yield SECOND_IP6
    finally:
        lab.run(lab.lan, "ip", "-6", "addr", "del", f"{SECOND_IP6}/64", "dev", dev, check=False)


def probe(lab: routerlab.Lab, source: str = LAN_IP6, **args: Any) -> dict[str, Any]:
    """One firewall action by portctl's client on the LAN host, from `source`."""
    request = {"location": lab.url6, "source": source, **args}
    r = lab.run(lab.lan, sys.executable, "-m", "tests.pinholeprobe", json.dumps(request))
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def add(lab: routerlab.Lab, port: int, client: str = LAN_IP6, **extra: Any) -> dict[str, Any]:
    return probe(lab, op="add", client=client, port=port, **extra)


def pinhole_ports(lab: routerlab.Lab) -> set[int]:
    """The ports the router's firewall has pinhole rules for now (its nftables chain, read in its namespace)."""
    rules = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", "miniupnpd").stdout
    return {int(port) for port in re.findall(r"th dport (\d+) @nh", rules)}


def test_a_pinhole_lets_ipv6_tcp_reach_its_port_and_nothing_else(lab: routerlab.Lab) -> None:
    """Nothing gets through before AddPinhole; after it, its port does and a neighbouring one does not."""
    lab.serve6(18700)
    lab.serve6(18701)
    assert not lab.reaches6(18700), "the forward policy must drop IPv6 before any pinhole"
    added = add(lab, 18700)
    assert isinstance(added.get("unique_id"), int), added
    assert routerlab.eventually(lambda: lab.reaches6(18700))
    assert not lab.reaches6(18701)


def test_the_firewall_says_pinholes_are_allowed(lab: routerlab.Lab) -> None:
    """GetFirewallStatus through portctl's client reads both of its booleans."""
    assert probe(lab, op="status") == {"enabled": True, "inbound_pinholes_allowed": True}


def test_adding_the_identical_pinhole_again_answers_the_same_unique_id(lab: routerlab.Lab) -> None:
    """An identical pinhole gets its UniqueID back (how an owner finds its own); another port gets another."""
    first = add(lab, 18710)["unique_id"]
    assert add(lab, 18710)["unique_id"] == first
    assert add(lab, 18711)["unique_id"] != first


def test_update_pinhole_extends_the_lease(lab: routerlab.Lab) -> None:
    """A pinhole given a longer lease by UpdatePinhole outlives one added after it with its first lease."""
    lab.serve6(18720)
    unique_id = add(lab, 18720, lease=SHORT_LEASE)["unique_id"]
    assert probe(lab, op="update", unique_id=unique_id, lease=3600) == {"done": True}
    add(lab, 18721, lease=SHORT_LEASE)  # expires no earlier than 18720 would have without the update
    routerlab.wait_for(lambda: 18721 not in pinhole_ports(lab), 120, "the router to expire the short pinhole")
    assert 18720 in pinhole_ports(lab)
    assert routerlab.eventually(lambda: lab.reaches6(18720))


def test_update_of_an_unknown_pinhole_is_typed_not_found(lab: routerlab.Lab) -> None:
    """UpdatePinhole of a UniqueID the router never gave is PinholeNotFound, with the router's code."""
    answer = probe(lab, op="update", unique_id=65000, lease=600)
    assert (answer["error"], answer["code"]) == ("PinholeNotFound", 402)


def test_delete_pinhole_closes_it_and_a_second_delete_is_typed_not_found(lab: routerlab.Lab) -> None:
    """DeletePinhole stops the traffic the pinhole let in; deleting it again is PinholeNotFound (402)."""
    lab.serve6(18730)
    unique_id = add(lab, 18730)["unique_id"]
    assert routerlab.eventually(lambda: lab.reaches6(18730))
    assert probe(lab, op="delete", unique_id=unique_id) == {"done": True}
    assert not lab.reaches6(18730)
    again = probe(lab, op="delete", unique_id=unique_id)
    assert (again["error"], again["code"]) == ("PinholeNotFound", 402)
    assert str(unique_id) in again["message"]


def test_a_pinhole_for_another_address_is_refused_606_saying_why(lab: routerlab.Lab) -> None:
    """A pinhole to an address the request did not come from is PinholeRefused (606), naming the source rule."""
    answer = add(lab, 18740, client="2001:db8:77::99")
    assert (answer["error"], answer["code"]) == ("PinholeRefused", 606)
    assert "only to the address the request comes from" in answer["message"]
    assert LAN_IP6 in answer["message"]


def test_a_pinhole_to_a_privileged_port_is_refused_606_saying_why(lab: routerlab.Lab) -> None:
    """A pinhole to a port below 1024 is PinholeRefused (606), naming the port rule."""
    answer = add(lab, 80)
    assert (answer["error"], answer["code"]) == ("PinholeRefused", 606)
    assert "below 1024" in answer["message"]


def test_the_client_speaks_from_the_address_it_is_given(lab: routerlab.Lab, second_address: str) -> None:
    """From the LAN host's second address, a pinhole to it opens and carries traffic; from the first it is 606."""
    lab.serve6(18750)
    refused = add(lab, 18750, client=second_address)  # leaves from LAN_IP6
    assert (refused["error"], refused["code"]) == ("PinholeRefused", 606)
    added = probe(lab, source=second_address, op="add", client=second_address, port=18750)
    assert isinstance(added.get("unique_id"), int), added
    assert routerlab.eventually(lambda: lab.reaches6(18750, second_address))
