"""The IPv6 firewall client over a transport the test hands in (no sockets, no router), and the HTTP
client's source address, which the router judges pinholes by."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from reconciler.backends.http import HttpClient, Response
from reconciler.backends.upnp import firewall
from reconciler.backends.upnp.description import FIREWALL_SERVICE
from reconciler.backends.upnp.session import Service, Session
from reconciler.errors import ActionNotOffered, PinholeNotFound, PinholeRefused, RouterProtocolError, UpnpActionError
from reconciler.models import Pinhole, PinholeKey, Protocol
from tests.test_pinhole_checks import LOCATION, ME, ROUTER6, document, pinhole

# -- the firewall client ------------------------------------------------------------------------------


class Router:
    """A transport answering SOAP by `handle(action, body)`; remembers each action and body it was sent."""

    def __init__(self, handle: Callable[[str, str], Response]) -> None:
        self.handle = handle
        self.sent: list[tuple[str, str]] = []

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
        if method == "GET":
            name = "miniupnpd-2.3.1-WANIP6FC.xml" if path.endswith("WANIP6FC.xml") else "miniupnpd-2.3.1-igd2.xml"
            return Response(200, document(name), {})
        self.sent.append((action, body.decode()))
        return self.handle(action, body.decode())

    def close(self) -> None:
        pass


def answer(action: str, **out: str) -> Response:
    args = "".join(f"<{k}>{v}</{k}>" for k, v in out.items())
    return Response(
        200,
        (
            '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<u:{action}Response xmlns:u="{FIREWALL_SERVICE}">{args}</u:{action}Response></s:Body></s:Envelope>'
        ).encode(),
        {},
    )


def fault(code: int) -> Response:
    return Response(
        500,
        (
            '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
            '<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
            f"<errorCode>{code}</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
        ).encode(),
        {},
    )


@pytest.fixture
def router() -> Router:
    return Router(lambda action, body: answer(action, UniqueID="7"))


def connected(router: Router, source: str = ME) -> firewall.Firewall:
    return firewall.connect(LOCATION, source=source, transport=lambda h, p: router)


def test_add_pinhole_sends_the_pinhole_as_given_and_returns_its_unique_id(router: Router) -> None:
    """AddPinhole carries every field in the service's order, the protocol as its IP number; UniqueID comes back."""
    fw = connected(router)
    udp = Pinhole(PinholeKey(ME, 18001, Protocol.UDP, "2001:db8:25::1", 53), 600)
    assert fw.add(udp) == 7
    args = re.findall(r"<(\w+)>([^<]*)</\1>", router.sent[-1][1])
    assert router.sent[-1][0] == "AddPinhole"
    assert args == [
        ("RemoteHost", "2001:db8:25::1"),
        ("RemotePort", "53"),
        ("InternalClient", ME),
        ("InternalPort", "18001"),
        ("Protocol", "17"),
        ("LeaseTime", "600"),
    ]


def test_update_and_delete_name_the_pinhole_by_its_unique_id(router: Router) -> None:
    """UpdatePinhole sends the UniqueID and new lease; DeletePinhole the UniqueID."""
    fw = connected(router)
    fw.update(7, 7200)
    fw.delete(7)
    assert [(a, re.findall(r"<(\w+)>([^<]*)</\1>", b)) for a, b in router.sent] == [
        ("UpdatePinhole", [("UniqueID", "7"), ("NewLeaseTime", "7200")]),
        ("DeletePinhole", [("UniqueID", "7")]),
    ]


def test_the_firewall_status_reads_both_booleans() -> None:
    """GetFirewallStatus' two booleans come back as they were answered."""
    router = Router(lambda action, body: answer(action, FirewallEnabled="1", InboundPinholeAllowed="0"))
    assert connected(router).status() == firewall.FirewallStatus(enabled=True, inbound_pinholes_allowed=False)


def test_a_status_that_is_not_a_boolean_is_a_protocol_error() -> None:
    router = Router(lambda action, body: answer(action, FirewallEnabled="maybe", InboundPinholeAllowed="1"))
    with pytest.raises(RouterProtocolError, match="FirewallEnabled 'maybe' is not a boolean"):
        connected(router).status()


@pytest.mark.parametrize(
    ("source", "candidate", "says"),
    [
        (
            "2001:db8:77::3",
            pinhole(),
            "only to the address the request comes from, and this one came from 2001:db8:77::3",
        ),
        (ME, pinhole(port=80), "refuses pinholes to ports below 1024"),
        (ME, pinhole(), "the router's own rules refuse it"),
    ],
)
def test_a_606_is_a_typed_refusal_saying_which_rule(source: str, candidate: Pinhole, says: str) -> None:
    """606 to AddPinhole is PinholeRefused naming the rule the pinhole breaks, or the router's rules when none."""
    fw = connected(Router(lambda action, body: fault(606)), source)
    with pytest.raises(PinholeRefused) as refused:
        fw.add(candidate)
    assert (refused.value.code, refused.value.internal_client, refused.value.internal_port) == (
        606,
        candidate.key.internal_client,
        candidate.key.internal_port,
    )
    assert says in str(refused.value)


@pytest.mark.parametrize("code", [402, 704])
@pytest.mark.parametrize("action", ["update", "delete"])
def test_an_unknown_unique_id_is_typed_not_found(action: str, code: int) -> None:
    """402 (miniupnpd) or 704 (the spec) to UpdatePinhole or DeletePinhole is PinholeNotFound with the UniqueID."""
    fw = connected(Router(lambda a, body: fault(code)))
    with pytest.raises(PinholeNotFound, match="holds no pinhole 9") as missing:
        fw.update(9, 60) if action == "update" else fw.delete(9)
    assert (missing.value.code, missing.value.unique_id) == (code, 9)


def test_a_402_to_add_pinhole_is_not_called_not_found() -> None:
    """Only the actions that take a UniqueID read 402 as an unknown pinhole."""
    fw = connected(Router(lambda a, body: fault(402)))
    with pytest.raises(UpnpActionError) as failed:
        fw.add(pinhole())
    assert type(failed.value) is UpnpActionError and failed.value.code == 402


def test_a_401_answer_means_the_action_is_not_offered() -> None:
    """A router that lists the action and answers 401 InvalidAction to it does not offer it."""
    fw = connected(Router(lambda a, body: fault(401)))
    with pytest.raises(ActionNotOffered, match="answered 401 InvalidAction") as missing:
        fw.add(pinhole())
    assert missing.value.action == "AddPinhole"


def test_an_action_missing_from_the_scpd_is_never_sent(router: Router) -> None:
    """An action the service description does not list is ActionNotOffered without a request."""
    service = Service(FIREWALL_SERVICE, f"{ROUTER6}/ctl/IP6FCtl", f"{ROUTER6}/WANIP6FC.xml", frozenset({"AddPinhole"}))
    fw = firewall.Firewall(Session("2001:db8:77::1", connect=lambda h, p: router, source=ME), service)
    with pytest.raises(ActionNotOffered):
        fw.delete(7)
    assert router.sent == []


def test_a_router_without_the_firewall_service_offers_no_pinholes() -> None:
    """connect to a router whose description has no WANIPv6FirewallControl is ActionNotOffered saying so."""

    class Igd1(Router):
        def request(self, method: str, path: str, *args: object, **kwargs: object) -> Response:
            return Response(200, document("miniupnpd-2.3.1-igd1.xml"), {})

    with pytest.raises(ActionNotOffered, match="offers no WANIPv6FirewallControl service: no IPv6 pinholes"):
        connected(Igd1(lambda a, b: answer(a)))


# -- the source address -------------------------------------------------------------------------------


@pytest.fixture
def peer_seen() -> Iterator[tuple[int, list[str]]]:
    """A one-answer HTTP server on 127.0.0.1 that records the address each connection came from."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        conn, peer = server.accept()
        with conn:
            seen.append(peer[0])
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        thread.join(60)
        server.close()


@pytest.mark.skipif(not os.path.exists("/proc/net/route"), reason="127.0.0.2 is a loopback address on Linux")
def test_the_http_client_leaves_from_the_source_address_it_is_given(peer_seen: tuple[int, list[str]]) -> None:
    """With `source`, the router sees the request come from that address, not the route's choice."""
    port, seen = peer_seen
    client = HttpClient("127.0.0.1", port, timeout=30, source="127.0.0.2")
    assert client.request("GET", "/").body == b"ok"
    client.close()
    assert seen == ["127.0.0.2"]
