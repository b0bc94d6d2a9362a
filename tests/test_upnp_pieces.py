"""The UPnP backend's pieces on their own, over a transport the test hands in: no sockets, no router.

The description parser is pure, the session wraps every attempt (counting, one retry of a hiccup),
and building a backend sends nothing; `connect` is what talks to the router.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.backends.http import Response
from reconciler.backends.upnp import UpnpBackend, connect
from reconciler.backends.upnp.description import Description, parse_actions, parse_device
from reconciler.backends.upnp.session import Service, Session
from reconciler.cache import Cache
from reconciler.errors import ConnectionDropped, NotAnIGD, RouterProtocolError, UpnpActionError

ROUTER = "http://192.0.2.1:5000"
WAN2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
WAN1 = "urn:schemas-upnp-org:service:WANIPConnection:1"


def description(*service_types: str, base: str = "") -> bytes:
    services = "".join(
        f"<service><serviceType>{t}</serviceType><controlURL>/ctl/{i}</controlURL>"
        f"<SCPDURL>/scpd/{i}.xml</SCPDURL><eventSubURL>/evt/{i}</eventSubURL></service>"
        for i, t in enumerate(service_types)
    )
    url_base = f"<URLBase>{base}</URLBase>" if base else ""
    return (
        f'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0" configId="7">{url_base}'
        "<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>"
        "<friendlyName>Lab router</friendlyName><UDN>uuid:lab-1</UDN>"
        "<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>"
        f"<serviceList>{services}</serviceList></device></deviceList></device></root>"
    ).encode()


SCPD = (
    b'<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0"><actionList>'
    b"<action><name>GetExternalIPAddress</name></action><action><name>AddPortMapping</name></action>"
    b"</actionList></scpd>"
)


def answer(action: str, **out: str) -> bytes:
    args = "".join(f"<{k}>{v}</{k}>" for k, v in out.items())
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<u:{action}Response xmlns:u="{WAN2}">{args}</u:{action}Response></s:Body></s:Envelope>'
    ).encode()


def fault(code: int) -> bytes:
    return (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        '<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>refused</errorDescription></UPnPError></detail>"
        "</s:Fault></s:Body></s:Envelope>"
    ).encode()


class FakeTransport:
    """Answers each request with `handle(method, path, action)`; remembers what was asked."""

    def __init__(self, handle: Callable[[str, str, str], Response]) -> None:
        self.handle = handle
        self.sent: list[tuple[str, str, str]] = []

    def request(
        self,
        method: str,
        path: str,
        action: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
        why: str = "",
    ) -> Response:
        self.sent.append((method, path, action))
        return self.handle(method, path, action)

    def close(self) -> None:
        pass


def ok(body: bytes, status: int = 200) -> Response:
    return Response(status, body, {})


SERVICE = Service(
    WAN2, f"{ROUTER}/ctl/0", f"{ROUTER}/scpd/0.xml", frozenset({"GetExternalIPAddress", "AddPortMapping"})
)


def test_the_description_parser_reads_documents_without_any_request() -> None:
    """parse_device names the router and lists its connection services, most capable first, at absolute URLs."""
    device = parse_device(description(WAN1, WAN2, base="http://192.0.2.1:5000/"), f"{ROUTER}/root.xml")
    assert (device.udn, device.friendly_name, device.igd_version, device.config_id) == (
        "uuid:lab-1",
        "Lab router",
        2,
        "7",
    )
    assert [o.service_type for o in device.offered] == [WAN2, WAN1]
    assert device.offered[0].control_url == f"{ROUTER}/ctl/1"
    assert device.offered[0].event_url == f"{ROUTER}/evt/1"
    assert parse_actions(SCPD, "scpd") == frozenset({"GetExternalIPAddress", "AddPortMapping"})


def test_a_description_without_a_connection_service_is_not_an_igd() -> None:
    with pytest.raises(NotAnIGD, match="without a WANIPConnection or WANPPPConnection service"):
        parse_device(description("urn:schemas-upnp-org:service:Layer3Forwarding:1"), f"{ROUTER}/root.xml")


def test_the_session_counts_every_attempt_and_sends_a_dropped_request_once_more() -> None:
    """A dropped connection is a hiccup: sent again once; both attempts are counted, then a fault with its code."""
    drops = [ConnectionDropped("reset")]

    def handle(method: str, path: str, action: str) -> Response:
        if action == "GetExternalIPAddress" and drops:
            raise drops.pop()
        if action == "AddPortMapping":
            return ok(fault(718), 500)
        return ok(answer(action, NewExternalIPAddress="203.0.113.7"))

    transport = FakeTransport(handle)
    counted: list[tuple[str, str]] = []
    session = Session("192.0.2.1", on_request=lambda a, e: counted.append((a, e)), connect=lambda h, p: transport)
    assert session.call(SERVICE, "GetExternalIPAddress") == {"NewExternalIPAddress": "203.0.113.7"}
    with pytest.raises(UpnpActionError) as err:
        session.call(SERVICE, "AddPortMapping")
    assert err.value.code == 718
    assert counted == [("GetExternalIPAddress", "unreachable"), ("GetExternalIPAddress", ""), ("AddPortMapping", "718")]
    assert [s[1] for s in transport.sent] == ["/ctl/0"] * 3


def test_the_session_never_follows_a_url_off_the_router() -> None:
    transport = FakeTransport(lambda m, p, a: ok(b""))
    session = Session("192.0.2.1", connect=lambda h, p: transport)
    with pytest.raises(RouterProtocolError, match="not http:// on the router's own address"):
        session.get("http://198.51.100.9/root.xml", "device description")
    assert transport.sent == []


def test_building_a_backend_sends_nothing_and_connect_describes_through_the_transport() -> None:
    """UpnpBackend(...) is assembly only; connect() fetches the description and SCPD over the given transport."""
    idle = FakeTransport(lambda m, p, a: pytest.fail(f"a request was sent: {m} {p} {a}"))
    described = Description(f"{ROUTER}/root.xml", "7", "uuid:lab-1", "Lab router", 2, SERVICE)
    backend = UpnpBackend(described, Session("192.0.2.1", connect=lambda h, p: idle), cache=Cache(None))
    assert backend.info.udn == "uuid:lab-1" and idle.sent == []

    def handle(method: str, path: str, action: str) -> Response:
        if path == "/root.xml":
            return ok(description(WAN2))
        if path.startswith("/scpd/"):
            return ok(SCPD)
        return ok(answer(action, NewExternalIPAddress="203.0.113.7"))

    transport = FakeTransport(handle)
    connected = connect(f"{ROUTER}/root.xml", transport=lambda h, p: transport)
    assert connected.info.external_ip == "203.0.113.7"
    assert connected.info.service_type == WAN2
    assert transport.sent == [
        ("GET", "/root.xml", ""),
        ("GET", "/scpd/0.xml", ""),
        ("POST", "/ctl/0", "GetExternalIPAddress"),
    ]
