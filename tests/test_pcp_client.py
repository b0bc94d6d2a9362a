"""The PCP/NAT-PMP exchange on virtual time: retransmission schedules, matching, version negotiation.

A fake gateway stands in for the socket: it records each send with the virtual time, and answers
through a handler; waiting for an answer moves the virtual clock instead of sleeping.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.backends.pcp import wire
from reconciler.backends.pcp.client import Client, udp_socket
from reconciler.backends.pcp.errors import MalformedAnswer, UnsupportedVersion
from reconciler.errors import RouterTimeout, RouterUnreachable

GATEWAY = ("192.168.77.1", 5351)
NONCE = bytes.fromhex("00112233445566778899aabb")
Reply = tuple[float, bytes, tuple[str, int]]  # after how long, what, from where


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeGateway:
    """A connected UDP socket whose peer is `handler(request, sends so far)` -> replies."""

    def __init__(self, clock: VirtualClock, handler: Callable[[bytes, int], list[Reply]]) -> None:
        self.clock = clock
        self.handler = handler
        self.sent: list[tuple[float, bytes]] = []
        self.pending: list[tuple[float, bytes, tuple[str, int]]] = []
        self.timeout: float | None = None
        self.closed = False

    def send(self, data: bytes, /) -> int:
        self.sent.append((self.clock.now, data))
        for delay, reply, sender in self.handler(data, len(self.sent)):
            self.pending.append((self.clock.now + delay, reply, sender))
        return len(data)

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        assert self.timeout is not None and self.timeout > 0
        self.pending.sort(key=lambda p: p[0])
        if self.pending and self.pending[0][0] <= self.clock.now + self.timeout:
            at, reply, sender = self.pending.pop(0)
            self.clock.now = max(self.clock.now, at)
            return reply[:bufsize], sender
        self.clock.now += self.timeout
        raise TimeoutError

    def settimeout(self, value: float | None, /) -> None:
        self.timeout = value

    def getsockname(self) -> Any:
        return ("192.168.77.2", 40000)

    def close(self) -> None:
        self.closed = True


def client_for(
    handler: Callable[[bytes, int], list[Reply]], *, deadline: float = 60, jitter: float = 0.0
) -> tuple[Client, FakeGateway, VirtualClock]:
    clock = VirtualClock()
    gateway = FakeGateway(clock, handler)
    client = Client(
        GATEWAY[0], deadline=deadline, socket_factory=lambda h, p: gateway, clock=clock, jitter=lambda: jitter
    )
    return client, gateway, clock


def silent(_data: bytes, _sends: int) -> list[Reply]:
    return []


def map_request(client: Client) -> wire.MapRequest:
    return wire.MapRequest(NONCE, wire.IpProtocol.TCP, 8080, client.local_address, 600, 20000)


def pcp_answer(request: bytes, *, nonce: bytes | None = None, result: int = 0, epoch: int = 42) -> bytes:
    """The answer a PCP server gives to `request`: its body echoed, 20000 granted."""
    body = bytearray(request[24:60])
    if nonce is not None:
        body[:12] = nonce
    head = bytes([2, 0x80 | request[1], 0, result]) + (600).to_bytes(4, "big") + epoch.to_bytes(4, "big") + bytes(12)
    return head + bytes(body)


def test_pcp_retransmits_at_3_s_doubling_until_the_deadline() -> None:
    """Unanswered, PCP sends at 0, 3, 9, 21 and 45 s (IRT 3 s, doubling) and times out at 60 s."""
    client, gateway, clock = client_for(silent, deadline=60)
    with pytest.raises(RouterTimeout, match=r"no PCP answer from 192\.168\.77\.1:5351 in 60 s \(5 requests sent\)"):
        client.pcp(map_request(client))
    assert [at for at, _ in gateway.sent] == [0, 3, 9, 21, 45]
    assert clock.now == 60
    assert {data for _, data in gateway.sent} == {wire.encode_request(map_request(client))}


def test_pcp_waits_are_scaled_by_the_random_factor() -> None:
    """Each wait is scaled by 1 + RAND (RFC 6887 section 8.1.1): with RAND = +0.1, 3.3 s, 6.6 s, ..."""
    client, gateway, _ = client_for(silent, deadline=30, jitter=0.1)
    with pytest.raises(RouterTimeout):
        client.pcp(map_request(client))
    assert [round(at, 6) for at, _ in gateway.sent] == [0, 3.3, 9.9, 23.1]


def test_natpmp_retransmits_at_250_ms_doubling_nine_times_at_most() -> None:
    """Unanswered, NAT-PMP sends 9 times, 250 ms apart and doubling, then only waits for the deadline."""
    client, gateway, clock = client_for(silent, deadline=200)
    with pytest.raises(RouterTimeout, match=r"\(9 requests sent\)"):
        client.natpmp(wire.ExternalAddressRequest())
    assert [at for at, _ in gateway.sent] == [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75, 63.75]
    assert clock.now == 200


def test_an_answer_to_a_retransmission_ends_the_exchange() -> None:
    """The first two requests are lost; the third's answer, 0.5 s later, is returned with when it came."""

    def third_only(data: bytes, sends: int) -> list[Reply]:
        return [(0.5, pcp_answer(data), GATEWAY)] if sends == 3 else []

    client, gateway, _ = client_for(third_only)
    answer = client.pcp(map_request(client))
    assert (answer.sends, answer.received_at) == (3, 9.5)
    assert answer.response.map is not None and answer.response.map.external_port == 20000
    assert len(gateway.sent) == 3


def test_stray_datagrams_are_ignored() -> None:
    """Datagrams from another address or port, and answers with another nonce, do not end the exchange."""

    def noisy(data: bytes, _sends: int) -> list[Reply]:
        return [
            (0.1, pcp_answer(data), ("192.168.77.9", 5351)),
            (0.2, pcp_answer(data), ("192.168.77.1", 5350)),
            (0.3, pcp_answer(data, nonce=bytes(12)), GATEWAY),
            (0.4, pcp_answer(data, epoch=7), GATEWAY),
        ]

    client, gateway, _ = client_for(noisy)
    answer = client.pcp(map_request(client))
    assert (answer.response.epoch, answer.received_at, len(gateway.sent)) == (7, 0.4, 1)


def test_only_mismatched_answers_end_in_the_reason_not_a_timeout() -> None:
    """If the gateway only ever sends answers that do not match, the deadline raises what was wrong."""

    def wrong_nonce(data: bytes, _sends: int) -> list[Reply]:
        return [(0.1, pcp_answer(data, nonce=bytes(12)), GATEWAY)]

    client, _, clock = client_for(wrong_nonce, deadline=10)
    with pytest.raises(MalformedAnswer, match="nonce 000000000000000000000000 is not the request's"):
        client.pcp(map_request(client))
    assert clock.now == 10


def test_a_nat_pmp_only_gateway_tells_the_caller_to_use_nat_pmp() -> None:
    """A version-0 'unsupported version' answer to PCP raises UnsupportedVersion at once."""

    def natpmp_only(data: bytes, _sends: int) -> list[Reply]:
        return [(0.05, bytes([0, 0x80 | data[1], 0, 1, 0, 0, 0, 9]), GATEWAY)]

    client, gateway, _ = client_for(natpmp_only)
    with pytest.raises(UnsupportedVersion) as refused:
        client.pcp(map_request(client))
    assert (refused.value.server_version, len(gateway.sent)) == (0, 1)


def test_refusals_are_answers_not_errors_of_the_exchange() -> None:
    """A NOT_AUTHORIZED answer ends the exchange and is returned for the caller to judge."""

    def refuse(data: bytes, _sends: int) -> list[Reply]:
        return [(0.1, pcp_answer(data, result=wire.Result.NOT_AUTHORIZED), GATEWAY)]

    client, _, _ = client_for(refuse)
    assert client.pcp(map_request(client)).response.result_name == "NOT_AUTHORIZED"


def test_the_local_address_is_the_sockets_own() -> None:
    """Requests carry the address the socket sends from, as PCP requires."""
    client, _, _ = client_for(silent)
    assert client.local_address == ipaddress.IPv4Address("192.168.77.2")


def test_a_gateway_that_cannot_be_reached_is_a_router_error() -> None:
    """A socket that cannot be made becomes RouterUnreachable naming the gateway, not an OSError."""

    def no_route(host: str, port: int) -> Any:
        raise OSError(101, "Network is unreachable")

    with pytest.raises(RouterUnreachable, match=r"192\.168\.77\.1:5351 over UDP: Network is unreachable"):
        Client(GATEWAY[0], socket_factory=no_route)


def test_closing_releases_the_socket() -> None:
    """Leaving the `with` block closes the socket."""
    client, gateway, _ = client_for(silent)
    with client:
        pass
    assert gateway.closed


def test_a_real_udp_socket_on_loopback_completes_an_exchange() -> None:
    """The default socket factory works end to end: bound to the source asked for, connected to the
    gateway, answered by a server thread on loopback."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(60)
    port = server.getsockname()[1]

    def answer_once() -> None:
        data, peer = server.recvfrom(100)
        server.sendto(bytes([2, 0x80 | data[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 77]) + bytes(12), peer)

    thread = threading.Thread(target=answer_once)
    thread.start()
    factory = functools.partial(udp_socket, source="127.0.0.1")
    try:
        with Client("127.0.0.1", port=port, socket_factory=factory) as client:
            assert client.local_address == ipaddress.IPv4Address("127.0.0.1")
            answer = client.pcp(wire.AnnounceRequest(client.local_address))
        assert (answer.response.opcode, answer.response.epoch) == (wire.Opcode.ANNOUNCE, 77)
    finally:
        thread.join(60)
        server.close()
