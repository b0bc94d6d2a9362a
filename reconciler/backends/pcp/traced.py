"""--trace for PCP and NAT-PMP: a socket that hands each datagram to an `http.Observer`.

The one Exchange type serves here as for SSDP: each datagram sent is an exchange with no answer,
each datagram received one with nothing sent, its result code as `status`, the seconds since the
last send, and what portctl read in it as `note` (the client still judges whether it answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..http import Exchange, Observer
from . import wire
from .client import DatagramSocket, SocketFactory, udp_socket

_PCP_OPCODES = {int(o): o.name for o in wire.Opcode}
_NATPMP_OPCODES = {int(o): o.name for o in wire.NatPmpOpcode}


def traced(
    observe: Observer, factory: SocketFactory = udp_socket, clock: Callable[[], float] = time.monotonic
) -> SocketFactory:
    """A socket factory like `factory` whose sockets show every datagram to `observe`."""

    def open_socket(host: str, port: int) -> DatagramSocket:
        return TracedSocket(factory(host, port), f"udp://{host}:{port}", observe, clock)

    return open_socket


class TracedSocket:
    def __init__(self, sock: DatagramSocket, url: str, observe: Observer, clock: Callable[[], float]) -> None:
        self._sock = sock
        self._url = url
        self._observe = observe
        self._clock = clock
        self._sent_at = clock()

    def send(self, data: bytes, /) -> int:
        self._sent_at = self._clock()
        try:
            sent = self._sock.send(data)
        except OSError as exc:
            self._observe(Exchange(*describe(data), self._url, b"", None, b"", 0.0, f"not sent: {exc.strerror or exc}"))
            raise
        method, action = describe(data)
        self._observe(Exchange(method, self._url, action, data, None, b"", 0.0))
        return sent

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        data, sender = self._sock.recvfrom(bufsize)
        method, action = describe(data)
        note = summary(data)
        host, port = str(sender[0]), int(sender[1])
        self._observe(
            Exchange(
                method,
                f"udp://{host}:{port}",
                action,
                b"",
                result(data),
                data,
                self._clock() - self._sent_at,
                note=note,
            )
        )
        return data, sender

    def settimeout(self, value: float | None, /) -> None:
        self._sock.settimeout(value)

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def close(self) -> None:
        self._sock.close()


def describe(data: bytes) -> tuple[str, str]:
    """The protocol (method) and opcode (action) a datagram carries, by its version byte."""
    if len(data) < 2:
        return "UDP", ""
    opcode = data[1] & ~wire.RESPONSE_BIT
    if data[0] == wire.PCP_VERSION:
        return "PCP", _PCP_OPCODES.get(opcode, f"opcode {opcode}")
    if data[0] == wire.NATPMP_VERSION:
        return "NAT-PMP", _NATPMP_OPCODES.get(opcode, f"opcode {opcode}")
    return "UDP", f"version {data[0]}"


def result(data: bytes) -> int | None:
    """An answer's result code (PCP: byte 3; NAT-PMP: bytes 2-3); None for a datagram too short."""
    if len(data) >= 4 and data[0] == wire.PCP_VERSION:
        return data[3]
    if len(data) >= 4:
        return int.from_bytes(data[2:4], "big")
    return None


def summary(data: bytes) -> str:
    """What an answer says at a glance: its result by name, its lifetime and epoch where it has them."""
    code = result(data)
    if code is None:
        return f"{len(data)} bytes: too short to be an answer"
    if data[0] == wire.PCP_VERSION and len(data) >= 12:
        lifetime, epoch = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
        return f"result {wire.result_name(code)}, lifetime {lifetime}, epoch {epoch}"
    if data[0] == wire.NATPMP_VERSION and len(data) >= 8:
        return f"result {wire.natpmp_result_name(code)}, epoch {int.from_bytes(data[4:8], 'big')}"
    return f"result {code}"
