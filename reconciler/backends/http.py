"""HTTP/1.1 to one router: one kept-alive connection, a deadline per request, a cap on every body.

Written on http.client rather than requests because a router is one host on the LAN: there is no
proxy to honour, no redirect to follow, no TLS, and what matters is different. A request must end
by its deadline even when the router trickles bytes (a per-read timeout never fires then), no body
may grow past a cap (a hostile answer must not fill memory), and the connection is reused where the
router keeps it open, which saves a TCP handshake per action on routers that allow it.

The deadline is the socket's (`deadline.DeadlineSocket`): connect, send, status line, headers and
body all end by one instant, so a router that trickles bytes cannot hold a request past it.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import urls
from ..errors import ConnectionDropped, RouterError, RouterProtocolError, RouterTimeout, RouterUnreachable
from ..numbers import NotANumber, ascii_int, seconds
from .deadline import Clock, DeadlineSocket

DEFAULT_TIMEOUT = 5.0


def default_timeout() -> float:
    """Seconds to wait for each router request when nobody says: PORTCTL_TIMEOUT, else 5.

    A slow router, or a busy machine running many emulators (the test suite sets 30), needs more;
    a value that is not a number of seconds is a ValueError naming it.
    """
    text = os.environ.get("PORTCTL_TIMEOUT", "")
    return seconds(text) if text else DEFAULT_TIMEOUT


MAX_BODY_BYTES = 1 << 20
_CHUNK = 65536
# Raised when a kept-alive connection was closed by the router while idle: send again on a new one.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]  # names lower-cased


@dataclass(frozen=True)
class Exchange:
    """One request and what came of it, as an observer (--trace) sees it.

    HTTP to the router (SOAP, descriptions, GENA) is one exchange per request. SSDP is datagrams:
    each M-SEARCH sent is one exchange with no answer and no error, each answer another, with no
    bytes sent and `seconds` since its search went out.
    """

    method: str
    url: str
    action: str  # the SOAP action, "" for a document; the search target of an M-SEARCH
    sent: bytes
    status: int | None  # None: no answer (`error` says why; without one, a datagram that expects none)
    received: bytes
    seconds: float
    error: str = ""
    note: str = ""  # what portctl made of the answer, where that is not plain (an SSDP answer's LOCATION)


Observer = Callable[[Exchange], None]


class HttpClient:
    """Requests to `host`:`port`, one at a time (a lock serialises callers on other threads).

    `observe`, when given, sees every exchange once it ends, answered or not; `clock` times it.
    `source`, when given, is the local address every connection leaves from.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        max_body: int = MAX_BODY_BYTES,
        observe: Observer | None = None,
        clock: Clock = time.monotonic,
        source: str = "",
    ) -> None:
        self.host, self.port, self.timeout, self.max_body = host, port, timeout, max_body
        self.source = source
        self.observe, self.clock = observe, clock
        self.connections = 0  # TCP connections opened, for tests and the benchmark
        self._conn: _Connection | None = None
        self._lock = threading.Lock()

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
        """Send one request and read the whole answer; RouterError naming `action` and the URL when that fails.

        `timeout` replaces the client's own for this request; `why` says where it came from, for the message.
        """
        what = _What(action, f"http://{urls.bracketed(self.host)}:{self.port}{path}", timeout or self.timeout, why)
        if self.observe is None:
            return self._request(method, path, what, body, headers)
        start = self.clock()
        try:
            resp = self._request(method, path, what, body, headers)
        except RouterError as exc:
            self.observe(Exchange(method, what.url, action, body, None, b"", self.clock() - start, str(exc)))
            raise
        self.observe(Exchange(method, what.url, action, body, resp.status, resp.body, self.clock() - start))
        return resp

    def _request(self, method: str, path: str, what: _What, body: bytes, headers: dict[str, str] | None) -> Response:
        with self._lock:
            reused = self._conn is not None
            try:
                return self._exchange(method, path, what, body, headers or {})
            except _STALE:
                self.close()
                if not reused:
                    raise ConnectionDropped(f"{what}: the router closed the connection without answering") from None
            # The router closed a connection it had kept open; the request never reached it.
            try:
                return self._exchange(method, path, what, body, headers or {})
            except _STALE:
                self.close()
                raise ConnectionDropped(f"{what}: the router closed the connection without answering") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(self, method: str, path: str, what: _What, body: bytes, headers: dict[str, str]) -> Response:
        deadline = self.clock() + what.timeout
        try:
            conn = self._connection(deadline)
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = self._read(resp, what)
        except _STALE:
            raise
        except TimeoutError as exc:
            self.close()
            why = f" ({what.why})" if what.why else ""
            raise RouterTimeout(f"{what}: the router did not answer within {what.timeout:g}s{why}") from exc
        except http.client.HTTPException as exc:
            self.close()
            raise RouterProtocolError(f"{what}: malformed HTTP answer ({type(exc).__name__})") from exc
        except OSError as exc:
            self.close()
            raise RouterUnreachable(f"{what.unreachable}: {_reason(exc)}") from exc
        if resp.will_close:
            self.close()
        return Response(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})

    def _connection(self, deadline: float) -> _Connection:
        if self._conn is None:
            conn = _Connection(self.host, self.port, self.clock, self.source).by(deadline)
            conn.connect()
            self._conn = conn
            self.connections += 1
        return self._conn.by(deadline)

    def _read(self, resp: http.client.HTTPResponse, what: _What) -> bytes:
        declared = resp.getheader("Content-Length")
        if declared is not None:
            try:
                length = ascii_int(declared.strip(), max_digits=20)
            except NotANumber as exc:
                self.close()
                raise RouterProtocolError(f"{what}: malformed HTTP answer (Content-Length {exc})") from None
            if length > self.max_body:
                self.close()
                raise RouterProtocolError(f"{what}: the answer is larger than {self.max_body} bytes; refused")
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > self.max_body:
                self.close()
                raise RouterProtocolError(f"{what}: the answer is larger than {self.max_body} bytes; refused")
            parts.append(chunk)


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection on a DeadlineSocket: a request through it ends by the deadline set with `by`."""

    def __init__(self, host: str, port: int, clock: Clock, source: str = "") -> None:
        # The Host header names the address without its zone, which means nothing off this host (RFC 6874
        # section 4); the connection goes to the zoned one.
        super().__init__(host.partition("%")[0], port)
        self.zoned = host
        self.clock = clock
        self.source = source
        self.deadline = 0.0

    def by(self, deadline: float) -> _Connection:
        self.deadline = deadline
        if isinstance(self.sock, DeadlineSocket):
            self.sock.deadline = deadline
        return self

    def connect(self) -> None:
        sock = DeadlineSocket.connect_by(self.zoned, self.port, self.deadline, self.clock, source=self.source)
        # A request is one small write; never hold it back waiting for an ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


@dataclass(frozen=True)
class _What:
    """How a failed request is named in messages: the action (if any) and the URL."""

    action: str
    url: str
    timeout: float
    why: str

    def __str__(self) -> str:
        return f"{self.action}: {self.url}" if self.action else self.url

    @property
    def unreachable(self) -> str:
        return f"{self.action + ': ' if self.action else ''}cannot reach router at {self.url}"


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "name or service not known"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()
