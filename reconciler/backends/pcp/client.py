"""One PCP or NAT-PMP request and its answer, over UDP to the gateway's port 5351.

UDP loses datagrams, so a request is sent again until a matching answer arrives or the deadline
passes, on the schedule each RFC gives:
    PCP (RFC 6887 section 8.1.1): first wait IRT = 3 s, then doubling up to MRT = 1024 s, each wait
        scaled by 1 + RAND with RAND uniform in [-0.1, 0.1] so that clients do not retry in step;
    NAT-PMP (RFC 6886 section 3.1): 250 ms, doubling, at most 9 sends.
The RFCs would retry for minutes; portctl bounds each exchange by its own `deadline` instead.

Only datagrams from the gateway's address and port count. One that does not answer the request
(another nonce, opcode or port, or malformed) is ignored, as the RFCs ask, and the exchange keeps
waiting; if nothing better arrives by the deadline, the last such rejection is raised rather than a
timeout, since it says more.

The socket factory and the clock are injected, so tests drive the schedule on virtual time: a
fake socket's recvfrom advances the fake clock by its timeout instead of sleeping.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from reconciler.errors import RouterTimeout, RouterUnreachable

from . import wire
from .errors import MalformedAnswer

DEADLINE = 30.0  # seconds per exchange; UPNP-NOTES: under load a router took longer than 5 s to answer
RECEIVE_LIMIT = 2048  # larger than any valid answer, so an oversized one is seen as such


@dataclass(frozen=True)
class Schedule:
    """Retransmission: the first wait, its ceiling, how many sends at most (0: until the deadline)."""

    initial: float
    ceiling: float
    max_sends: int = 0
    jittered: bool = False


PCP_SCHEDULE = Schedule(initial=3.0, ceiling=1024.0, jittered=True)
NATPMP_SCHEDULE = Schedule(initial=0.25, ceiling=64.0, max_sends=9)


class DatagramSocket(Protocol):
    """What the client needs of a UDP socket connected to the gateway."""

    def send(self, data: bytes, /) -> int: ...
    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def getsockname(self) -> Any: ...
    def close(self) -> None: ...


SocketFactory = Callable[[str, int], DatagramSocket]
Clock = Callable[[], float]
Jitter = Callable[[], float]
R = TypeVar("R")


def udp_socket(host: str, port: int, source: str = "") -> DatagramSocket:
    """A UDP socket connected to host:port, so the kernel also drops datagrams from anyone else.

    `source` binds the local address first: a host with several IPv6 addresses must send from the
    one a mapping is for (bind it with functools.partial for the socket factory).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # getaddrinfo reads a link-local address's zone (`fe80::1%eth0`) into the scope id; a bare
        # (host, port) to connect() would leave it 0, and the kernel refuses that (EINVAL).
        address = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
        if source:
            sock.bind((source, 0))
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def rfc_jitter() -> float:
    return random.uniform(-0.1, 0.1)


@dataclass(frozen=True)
class Answer(Generic[R]):
    """A matching answer, the client's clock when it arrived (for epoch checks), and the sends it took."""

    response: R
    received_at: float
    sends: int


class Client:
    """Exchanges with one gateway; `close` (or `with`) releases the socket."""

    def __init__(
        self,
        gateway: str,
        *,
        port: int = wire.PORT,
        deadline: float = DEADLINE,
        socket_factory: SocketFactory = udp_socket,
        clock: Clock = time.monotonic,
        jitter: Jitter = rfc_jitter,
    ) -> None:
        try:
            ipaddress.ip_address(gateway.split("%")[0])
        except ValueError:
            raise ValueError(f"the gateway is an IP address, not {gateway!r}") from None
        self.gateway = gateway
        self.port = port
        self.deadline = deadline
        self.clock = clock
        self.jitter = jitter
        try:
            self._sock = socket_factory(gateway, port)
            own = self._sock.getsockname()[0]
        except OSError as exc:
            raise RouterUnreachable(f"cannot reach {gateway}:{port} over UDP: {exc.strerror or exc}") from exc
        # The address requests leave from: PCP wants it in every request (else ADDRESS_MISMATCH).
        self.local_address: wire.IPAddress = ipaddress.ip_address(own.split("%")[0])

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def pcp(self, request: wire.PcpRequest) -> Answer[wire.PcpResponse]:
        """Send a PCP request until it is answered. UnsupportedVersion: speak NAT-PMP to this gateway."""
        data = wire.encode_request(request)
        return self._exchange("PCP", data, lambda answer: wire.decode_response(answer, request), PCP_SCHEDULE)

    def natpmp(self, request: wire.NatPmpRequest) -> Answer[wire.NatPmpResponse]:
        data = wire.encode_natpmp(request)
        return self._exchange("NAT-PMP", data, lambda answer: wire.decode_natpmp(answer, request), NATPMP_SCHEDULE)

    def _exchange(self, protocol: str, data: bytes, decode: Callable[[bytes], R], schedule: Schedule) -> Answer[R]:
        start = self.clock()
        end = start + self.deadline
        sends = 0
        wait = schedule.initial
        next_send = start
        rejected: MalformedAnswer | None = None
        while True:
            now = self.clock()
            if now >= end:
                break
            if now >= next_send:
                self._send(data)
                sends += 1
                if schedule.max_sends and sends >= schedule.max_sends:
                    next_send = float("inf")
                else:
                    next_send = now + wait * ((1 + self.jitter()) if schedule.jittered else 1)
                    wait = min(wait * 2, schedule.ceiling)
            datagram = self._receive(min(next_send, end) - now)
            if datagram is None:
                continue
            try:
                response = decode(datagram)
            except MalformedAnswer as exc:
                rejected = exc
                continue
            return Answer(response, self.clock(), sends)
        if rejected is not None:
            raise rejected
        raise RouterTimeout(
            f"no {protocol} answer from {self.gateway}:{self.port} in {self.deadline:g} s ({sends} requests sent)"
        )

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise RouterUnreachable(f"cannot send to {self.gateway}:{self.port}: {exc.strerror or exc}") from exc

    def _receive(self, timeout: float) -> bytes | None:
        """One datagram from the gateway within `timeout`, or None (nothing, or from someone else)."""
        self._sock.settimeout(max(timeout, 0.001))
        try:
            datagram, sender = self._sock.recvfrom(RECEIVE_LIMIT)
        except TimeoutError:
            return None
        except ConnectionRefusedError:
            # ICMP port unreachable for an earlier send: nothing listens yet; keep retrying.
            return None
        except OSError as exc:
            raise RouterUnreachable(f"cannot receive from {self.gateway}:{self.port}: {exc.strerror or exc}") from exc
        if not _same_endpoint(sender, self.gateway, self.port):
            return None
        return datagram


def _same_endpoint(sender: Any, host: str, port: int) -> bool:
    try:
        address = ipaddress.ip_address(str(sender[0]).split("%")[0])
        expected = ipaddress.ip_address(host.split("%")[0])
    except (ValueError, IndexError, TypeError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address == expected and int(sender[1]) == port
