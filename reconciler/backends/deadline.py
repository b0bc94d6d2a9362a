"""A TCP socket with one deadline for a whole exchange, however the peer's bytes arrive.

A socket timeout bounds each receive, not the exchange: a router that sends one byte of its
headers or body every second never lets a 5 s timeout fire, and holds the caller for as long as it
likes. Here every connect, send and receive gets only the time left until `deadline` (by `clock`),
and none starts once it has passed, so the exchange ends by the deadline whatever the peer does.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

Clock = Callable[[], float]


class DeadlineSocket(socket.socket):
    """A connected TCP socket whose sends and receives end by `deadline` (TimeoutError after it)."""

    deadline: float
    clock: Clock

    @classmethod
    def connect_by(
        cls, host: str, port: int, deadline: float, clock: Clock = time.monotonic, *, source: str = ""
    ) -> DeadlineSocket:
        """A connection to host:port, made by `deadline`, that keeps it for what follows; from the local
        address `source` when one is given (a router may judge a request by where it comes from)."""
        # An ASCII name or address goes as bytes: a str is IDNA-encoded first, and that codec's
        # imports (stringprep, unicodedata) cost more than the rest of connecting on a LAN.
        # create_connection hands the name to getaddrinfo, which takes bytes (typeshed says str only).
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        plain = socket.create_connection(
            (name, port),  # type: ignore[arg-type]
            timeout=_left(deadline, clock),
            source_address=(source, 0) if source else None,
        )
        sock = cls(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.clock = clock
        sock.deadline = deadline
        return sock

    def _settle(self) -> None:
        self.settimeout(_left(self.deadline, self.clock))

    # http.client reads through makefile(), whose raw reads call recv_into; sendall's timeout
    # (Python >= 3.5) bounds the whole send, so settling once before it is enough.
    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._settle()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._settle()
        return super().recv(bufsize, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._settle()
        super().sendall(data, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self._settle()
        return super().send(data, flags)


def _left(deadline: float, clock: Clock) -> float:
    left = deadline - clock()
    if left <= 0:
        raise TimeoutError("the deadline has passed")
    return left
