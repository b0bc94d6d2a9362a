"""A link-local IPv6 default gateway (what router advertisements install) as the router pinholes go
through: found with its zone, written into URLs as RFC 6874 says, reached from this host's global
address on that link, and never a way to send a request to another host."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import discovery, pinholeaccess, urls
from reconciler.backends.http import Response, _Connection
from reconciler.backends.upnp.session import Session
from reconciler.errors import RouterProtocolError

DEFAULT_VIA_LINK_LOCAL = (
    # destination, prefix length, source, prefix length, next hop, metric, refcnt, use, flags, device
    "20010db8007700000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001    eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fe800000000000000000000000000001 00000400 00000001 00000000 00000003    eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)
DEFAULT_VIA_GLOBAL = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "20010db8007700000000000000000001 00000400 00000001 00000000 00000003    eth0\n"
)
# A second default route through another link, with a lower metric: the one the kernel prefers.
PREFERRED_VIA_WLAN = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fe800000000000000000000000000009 00000258 00000001 00000000 00000003   wlan0\n"
)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (DEFAULT_VIA_LINK_LOCAL, "fe80::1%eth0"),
        (DEFAULT_VIA_LINK_LOCAL + PREFERRED_VIA_WLAN, "fe80::9%wlan0"),
        (PREFERRED_VIA_WLAN + DEFAULT_VIA_GLOBAL, "fe80::9%wlan0"),
    ],
)
def test_the_default_gateway_is_the_preferred_default_routes_hop_link_local_with_its_zone(
    tmp_path: Path, table: str, expected: str
) -> None:
    """The lowest-metric default route's next hop; a link-local one carries the route's device as zone."""
    route = tmp_path / "ipv6_route"
    route.write_text(table)
    assert discovery.default_gateway6(str(route)) == expected


def test_the_global_addresses_on_a_device_come_stable_first(tmp_path: Path) -> None:
    """On one device: global, usable addresses only, stable before temporary before deprecated."""
    table = tmp_path / "if_inet6"
    table.write_text(
        "20010db8007700000000000000000099 02 40 00 01     eth0\n"  # temporary (privacy)
        "20010db8007700000000000000000088 02 40 00 20     eth0\n"  # deprecated
        "20010db8007700000000000000000002 02 40 00 80     eth0\n"  # stable
        "fe80000000000000020000fffe000002 02 40 20 80     eth0\n"  # link-local
        "20010db8007700000000000000000005 02 40 00 c0     eth0\n"  # tentative
        "20010db8008800000000000000000007 03 40 00 80    wlan0\n"  # another device
    )
    assert discovery.local_ipv6(str(table), device="eth0") == ["2001:db8:77::2", "2001:db8:77::99", "2001:db8:77::88"]
    assert discovery.local_ipv6(str(table), device="wlan0") == ["2001:db8:88::7"]
    assert discovery.local_ipv6(str(table), device="eth9") == []


def test_a_unique_local_address_comes_after_every_public_one(tmp_path: Path) -> None:
    """A LAN with a ULA (fd00::/8) beside its public prefix: the public address, even a temporary one, is
    chosen first; the internet cannot reach a pinhole to a ULA."""
    table = tmp_path / "if_inet6"
    table.write_text(
        "fd000000000000000000000000000002 02 40 00 80     eth0\n"  # stable, unique-local
        "20010db8007700000000000000000099 02 40 00 01     eth0\n"  # temporary, public
        "20010db8007700000000000000000002 02 40 00 80     eth0\n"  # stable, public
    )
    assert discovery.local_ipv6(str(table), device="eth0") == ["2001:db8:77::2", "2001:db8:77::99", "fd00::2"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://192.168.77.1:5000/rootDesc.xml", "http://[fe80::1%25eth0]:5000/rootDesc.xml"),
        ("pcp://192.168.77.1", "pcp://[fe80::1%25eth0]"),
    ],
)
def test_the_routers_ipv6_location_names_a_link_local_gateway_with_its_zone(
    monkeypatch: pytest.MonkeyPatch, address: str, expected: str
) -> None:
    """An IPv4 router URL becomes one at the link-local gateway, the zone written `%25` (RFC 6874)."""
    monkeypatch.setattr(discovery, "default_gateway6", lambda: "fe80::1%eth0")
    assert pinholeaccess.ipv6_location(address) == expected


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[fe80::1%25eth0]:5000/rootDesc.xml", "fe80::1%eth0"),
        ("pcp://[FE80::0001%25Eth0]", "fe80::1%Eth0"),  # the address compressed, the device name as written
        ("http://[fe80::1%eth0]:5000/", "fe80::1%eth0"),  # a zone written unescaped, as people do
        ("http://[2001:db8:77::1]:5000/", "2001:db8:77::1"),
        ("http://192.168.77.1:5000/", "192.168.77.1"),
    ],
)
def test_a_urls_host_is_what_a_socket_takes(url: str, host: str) -> None:
    """Brackets gone, a zone as getaddrinfo reads it (`%eth0`)."""
    assert urls.host(url) == host


def test_a_zoned_host_is_written_back_into_a_url_as_rfc_6874_says() -> None:
    """The zone's `%` is `%25` inside the brackets, and reading the URL back gives the same host."""
    assert urls.bracketed("fe80::1%eth0") == "[fe80::1%25eth0]"
    assert urls.host(f"http://{urls.bracketed('fe80::1%eth0')}:5000/") == "fe80::1%eth0"
    assert urls.bracketed("2001:db8::1") == "[2001:db8::1]"
    assert urls.bracketed("192.168.77.1") == "192.168.77.1"


def test_the_source_towards_a_link_local_gateway_is_this_hosts_global_address_on_its_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not the link-local address the kernel would pick: the router opens pinholes for the source alone."""
    asked: list[str] = []

    def on_device(if_inet6: str | None = None, *, device: str = "") -> list[str]:
        asked.append(device)
        return ["2001:db8:77::2", "2001:db8:77::99"] if device == "eth0" else []

    monkeypatch.setattr(discovery, "local_ipv6", on_device)
    assert pinholeaccess.source_towards("http://[fe80::1%25eth0]:5000/rootDesc.xml") == "2001:db8:77::2"
    assert pinholeaccess.source_towards("pcp://[fe80::1%25wlan0]") == ""
    assert asked == ["eth0", "wlan0"]


class Recorder:
    """A transport that answers every request with an empty 200 and remembers where it was sent."""

    def __init__(self, host: str, port: int, sent: list[tuple[str, int, str]]) -> None:
        self.host, self.port, self.sent = host, port, sent

    def request(self, method: str, path: str, *_: object, **__: object) -> Response:
        self.sent.append((self.host, self.port, path))
        return Response(200, b"", {})

    def close(self) -> None:
        pass


def zoned_session(sent: list[tuple[str, int, str]]) -> Session:
    return Session("fe80::1%eth0", source="2001:db8:77::2", connect=lambda h, p: Recorder(h, p, sent))


@pytest.mark.parametrize(
    "elsewhere",
    [
        "http://[2001:db8:77::1]:5000/ctl/IP6FCtl",  # perhaps the router's global address, perhaps anyone's
        "http://[fe80::1%25eth1]:5000/ctl/IP6FCtl",  # the same address on another link is another host
        "http://[fe80::2]:5000/ctl/IP6FCtl",
        "http://192.168.77.1:5000/ctl/IP6FCtl",
    ],
)
def test_a_link_local_routers_urls_are_followed_to_its_zoned_address_and_nowhere_else(elsewhere: str) -> None:
    """A URL at the router's link-local address, with its zone or without (the zone names this host's
    link), goes to the zoned address; one naming any other host or link is refused and nothing is sent."""
    sent: list[tuple[str, int, str]] = []
    session = zoned_session(sent)
    session.check_same_host("http://[fe80::1]:5000/ctl/IP6FCtl")
    session.get("http://[fe80::1%25eth0]:5000/rootDesc.xml", "device description")
    session.get("http://[fe80::1]:5000/WANIP6FC.xml", "service description")
    assert sent == [("fe80::1%eth0", 5000, "/rootDesc.xml"), ("fe80::1%eth0", 5000, "/WANIP6FC.xml")]
    with pytest.raises(RouterProtocolError):
        session.check_same_host(elsewhere)
    with pytest.raises(RouterProtocolError):
        session.get(elsewhere, "service description")
    assert len(sent) == 2


def test_the_host_header_leaves_the_zone_out_and_the_connection_keeps_it() -> None:
    """A zone means nothing off this host (RFC 6874 section 4): the router sees the bare address."""
    conn = _Connection("fe80::1%eth0", 5000, clock=lambda: 0.0)
    assert (conn.host, conn.zoned) == ("fe80::1", "fe80::1%eth0")
