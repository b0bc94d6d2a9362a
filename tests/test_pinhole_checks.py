"""The IPv6 pinhole layer's pure parts: the firewall service in real router descriptions, and the
checks a pinhole must pass before anything is written (with this host's addresses from if_inet6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import discovery, pinholes
from reconciler.backends.upnp.description import FIREWALL_SERVICE, parse_actions, parse_device
from reconciler.models import Pinhole, PinholeKey, Protocol

DESCRIPTIONS = Path(__file__).parent / "descriptions"
ROUTER6 = "http://[2001:db8:77::1]:5000"
LOCATION = f"{ROUTER6}/rootDesc.xml"
ME = "2001:db8:77::2"
FIREWALL_ACTIONS = frozenset(
    {"GetFirewallStatus", "GetOutboundPinholeTimeout", "AddPinhole", "UpdatePinhole", "DeletePinhole"}
    | {"GetPinholePackets", "CheckPinholeWorking"}
)


def document(name: str) -> bytes:
    return (DESCRIPTIONS / name).read_bytes()


def pinhole(client: str = ME, port: int = 18000, lease: int = 3600, **key: object) -> Pinhole:
    return Pinhole(PinholeKey(client, port, Protocol.TCP, **key), lease)  # type: ignore[arg-type]


# -- the description ----------------------------------------------------------------------------------


def test_the_lab_routers_description_offers_its_firewall_beside_the_connection() -> None:
    """miniupnpd's IGD v2 description yields the firewall service at absolute URLs on the router's IPv6 address."""
    device = parse_device(document("miniupnpd-2.3.1-igd2.xml"), LOCATION)
    assert device.firewall is not None
    assert (device.firewall.service_type, device.firewall.control_url, device.firewall.scpd_url) == (
        FIREWALL_SERVICE,
        f"{ROUTER6}/ctl/IP6FCtl",
        f"{ROUTER6}/WANIP6FC.xml",
    )
    assert [o.service_type for o in device.offered] == ["urn:schemas-upnp-org:service:WANIPConnection:2"]


def test_a_description_without_the_firewall_service_has_none() -> None:
    """miniupnpd's IGD v1 description offers a connection service and no firewall."""
    device = parse_device(document("miniupnpd-2.3.1-igd1.xml"), LOCATION)
    assert device.firewall is None
    assert [o.service_type for o in device.offered] == ["urn:schemas-upnp-org:service:WANIPConnection:1"]


def test_the_firewall_service_description_lists_its_actions() -> None:
    """The lab router's WANIPv6FirewallControl SCPD lists the seven actions of the service."""
    assert parse_actions(document("miniupnpd-2.3.1-WANIP6FC.xml"), "scpd") == FIREWALL_ACTIONS


# -- the checks before any write ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (pinhole(), []),
        (pinhole(port=1024, lease=1, remote_host="2001:db8:25::1", remote_port=443), []),
        (pinhole(client="2001:db8:77::9"), ["is not an address of this host", "run portctl on the host"]),
        (pinhole(client="2001:DB8:77::2"), ["write it as 2001:db8:77::2"]),
        (pinhole(client="192.168.77.2"), ["is not an IPv6 address"]),
        (pinhole(port=80), ["ports 1024-65535 only", "serve on a port from 1024"]),
        (pinhole(lease=0), ["none is permanent", "let portctl renew it"]),
        (pinhole(lease=86401), ["1 to 86400 seconds"]),
        (pinhole(remote_host="2001:db8::/48"), ["one IPv6 address, or empty for any"]),
        (pinhole(remote_port=70000), ["remote port 70000"]),
    ],
)
def test_the_checks_name_each_breach_with_its_remedy(candidate: Pinhole, expected: list[str]) -> None:
    """Each rule the router enforces is one message naming the pinhole; a pinhole within them has none."""
    found = pinholes.problems(candidate, [ME, "2001:db8:77::3"])
    assert len(found) == (1 if expected else 0), found
    for text in expected:
        assert text in found[0]
        assert found[0].startswith(f"pinhole {candidate.key}: ")


def test_a_host_without_ipv6_says_it_has_none() -> None:
    """With no IPv6 address at all the message says so rather than listing nothing."""
    assert "(its global IPv6 addresses: none)" in pinholes.problems(pinhole(), [])[0]


def test_this_hosts_addresses_are_its_usable_global_ones(tmp_path: Path) -> None:
    """if_inet6's global addresses count, compressed; loopback, link-local and tentative ones do not."""
    table = tmp_path / "if_inet6"
    table.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "20010db8007700000000000000000002 02 40 00 80     eth0\n"
        "fe80000000000000020000fffe000002 02 40 20 80     eth0\n"
        "20010db8007700000000000000000005 02 40 00 c0     eth0\n"
        "fd000000000000000000000000000007 03 40 00 00     eth1\n"
        "garbage\n"
    )
    assert discovery.local_ipv6(str(table)) == [ME, "fd00::7"]
    assert discovery.local_ipv6(str(tmp_path / "missing")) == []
