"""The emulated router's UDP port for PCP and NAT-PMP: datagrams in, `pcp.Responder`'s answers out."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

Handler = Callable[[bytes, str], bytes | None]
RECEIVE_LIMIT = 2048  # more than any PCP message (1100 bytes), so an oversized one arrives whole


class UdpServer:
    """Serves `handle` on host:port (port 0 picks a free one) from a thread until stop()."""

    def __init__(self, handle: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handle = handle
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(0.05)  # a short poll: stop() returns at once
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> UdpServer:
        self._thread = threading.Thread(target=self._serve, name="portctl-emulator-pcp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, sender = self._sock.recvfrom(RECEIVE_LIMIT)
            except TimeoutError:
                continue
            except OSError:
                return  # closed under us
            answer = self.handle(data, str(sender[0]))
            if answer is not None:
                with contextlib.suppress(OSError):  # the client went away: nothing to tell it
                    self._sock.sendto(answer, sender)
