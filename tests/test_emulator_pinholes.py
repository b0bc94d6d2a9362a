"""The emulator's IPv6 pinhole service (WANIPv6FirewallControl:1) on ::1, with miniupnpd 2.3.1's rules,
and a router without IGD2 that answers 401 to every pinhole action."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from reconciler import xmlsafe
from reconciler.backends import soap
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.errors import UpnpActionError

ME = "::1"
SERVICE_TYPE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"


class SteppedClock:
    """The monotonic clock plus whatever the test jumped over."""

    def __init__(self) -> None:
        self.jumped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.jumped


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def server(clock: SteppedClock) -> Iterator[EmulatorServer]:
    with EmulatorServer(Router(clock=clock), host=ME) as s:
        yield s


def get(url: str) -> bytes:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", parts.path)
        return conn.getresponse().read()
    finally:
        conn.close()


def firewall_control_url(server: EmulatorServer) -> str:
    """The control URL the root description gives the firewall service ("" when it lists none)."""
    root = xmlsafe.parse(get(server.url), "rootDesc")
    for service in root.iter():
        if xmlsafe.local(service.tag) == "service" and xmlsafe.text(service, "serviceType") == SERVICE_TYPE:
            return server.url.rpartition("/rootDesc.xml")[0] + xmlsafe.text(service, "controlURL")
    return ""


def call(server: EmulatorServer, action: str, **args: str) -> dict[str, str]:
    """One pinhole action from ::1; UpnpActionError for the router's refusal."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(
            "POST", "/ctl/IP6FCtl", soap.envelope(SERVICE_TYPE, action, args), soap.headers(SERVICE_TYPE, action)
        )
        response = conn.getresponse()
        return soap.answer(action, response.status, response.read())
    finally:
        conn.close()


def add(server: EmulatorServer, port: int = 8443, lease: int = 3600, client: str = ME, **extra: str) -> str:
    args = {"RemoteHost": "", "RemotePort": "0", "InternalClient": client, "InternalPort": str(port), "Protocol": "6"}
    return call(server, "AddPinhole", **{**args, **extra, "LeaseTime": str(lease)})["UniqueID"]


def refused(server: EmulatorServer, action: str, **args: str) -> int:
    with pytest.raises(UpnpActionError) as exc:
        call(server, action, **args)
    return exc.value.code


def pinholes(server: EmulatorServer) -> list[tuple[int, str, int, int]]:
    return [(p.unique_id, p.internal_client, p.internal_port, p.protocol) for p in server.router.firewall.rows()]


def test_the_service_is_advertised_and_says_pinholes_are_allowed(server: EmulatorServer) -> None:
    """An IGD v2 router lists WANIPv6FirewallControl:1 with its SCPD, and GetFirewallStatus says yes."""
    assert firewall_control_url(server).endswith("/ctl/IP6FCtl")
    assert b"<name>AddPinhole</name>" in get(server.url.replace("/rootDesc.xml", "/WANIP6FC.xml"))
    assert call(server, "GetFirewallStatus") == {"FirewallEnabled": "1", "InboundPinholeAllowed": "1"}


def test_an_identical_add_returns_the_same_unique_id_and_extends_the_lease(
    server: EmulatorServer, clock: SteppedClock
) -> None:
    """Re-adding the same pinhole answers its UniqueID again and restarts its lease; another port is
    another pinhole."""
    first = add(server, lease=1000)
    clock.jumped += 900
    assert add(server, lease=1000) == first
    clock.jumped += 900  # 1800 s after the first add: alive only because the second one extended it
    other = add(server, port=8444)
    assert other != first
    assert pinholes(server) == [(int(first), ME, 8443, 6), (int(other), ME, 8444, 6)]


def test_a_pinhole_expires_on_the_routers_clock_and_update_extends_it(
    server: EmulatorServer, clock: SteppedClock
) -> None:
    """UpdatePinhole gives a pinhole a new lease; without one it is gone when its lease ends."""
    kept, lapsing = add(server, lease=600), add(server, port=9000, lease=600)
    clock.jumped += 500
    call(server, "UpdatePinhole", UniqueID=kept, NewLeaseTime="6000")
    clock.jumped += 200
    assert [p[0] for p in pinholes(server)] == [int(kept)]
    assert refused(server, "UpdatePinhole", UniqueID=lapsing, NewLeaseTime="600") == 704


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"port": 1023}, 606),  # below 1024
        ({"client": "::2"}, 606),  # not the sender's own address, secure mode or not
        ({"client": "127.0.0.1"}, 402),  # not an IPv6 address
        ({"lease": 0}, 402),
        ({"lease": 86401}, 402),
        ({"Protocol": "1"}, 402),
        ({"RemoteHost": "not-an-address"}, 402),
    ],
)
def test_what_miniupnpd_refuses_is_refused_and_nothing_is_opened(
    server: EmulatorServer, args: dict[str, object], code: int
) -> None:
    """miniupnpd's rules: internal port >= 1024, the sender's own IPv6 address, lease 1..86400."""
    with pytest.raises(UpnpActionError) as exc:
        add(server, **args)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert pinholes(server) == []


def test_a_leases_bounds_are_accepted(server: EmulatorServer) -> None:
    """Lease 1 and lease 86400 both open a pinhole."""
    add(server, port=8001, lease=1)
    add(server, port=8002, lease=86400)
    assert [p[2] for p in pinholes(server)] == [8001, 8002]


def test_delete_removes_and_a_second_delete_answers_402(server: EmulatorServer) -> None:
    """DeletePinhole removes the pinhole; deleting it again is 402, as measured on 2.3.1."""
    unique_id = add(server)
    assert call(server, "DeletePinhole", UniqueID=unique_id) == {}
    assert pinholes(server) == []
    assert refused(server, "DeletePinhole", UniqueID=unique_id) == 402


def test_a_reboot_closes_every_pinhole(server: EmulatorServer) -> None:
    """A router restart forgets its pinholes with its port mappings."""
    add(server)
    server.reboot()
    assert pinholes(server) == []


def test_actions_2_3_1_does_not_implement_answer_as_it_does(server: EmulatorServer) -> None:
    """GetOutboundPinholeTimeout answers 501, CheckPinholeWorking 709, GetPinholePackets 0."""
    unique_id = add(server)
    outbound = {"RemoteHost": "", "RemotePort": "0", "InternalClient": ME, "InternalPort": "8443", "Protocol": "6"}
    assert refused(server, "GetOutboundPinholeTimeout", **outbound) == 501
    assert refused(server, "CheckPinholeWorking", UniqueID=unique_id) == 709
    assert call(server, "GetPinholePackets", UniqueID=unique_id) == {"PinholePackets": "0"}


def test_a_router_without_igd2_answers_401_to_every_pinhole_action() -> None:
    """no-pinholes lists no firewall service, and every pinhole action at its URL is 401."""
    with EmulatorServer(Router(PROFILES["no-pinholes"]), host=ME) as server:
        assert firewall_control_url(server) == ""
        assert refused(server, "GetFirewallStatus") == 401
        assert refused(server, "AddPinhole", InternalClient=ME, InternalPort="8443", Protocol="6") == 401
        assert server.router.firewall.rows() == []
