"""UPnP eventing (GENA, UPnP Device Architecture 1.1 section 4): subscribe to the WAN connection
service and hear about table changes within a second, instead of at the next poll.

`EventListener` is the HTTP server the router's NOTIFY requests reach; `subscribe`, `renew` and
`unsubscribe` manage one subscription. Everything the router sends is treated as hostile: bodies
are size-capped and parsed by `xmlsafe`, events are accepted only from the router's address and
only on the listener's unguessable path.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from .. import xmlsafe
from ..errors import RouterError, RouterProtocolError
from ..httpserve import BackgroundServer
from ..numbers import NotANumber, ascii_int
from .http import Exchange, HttpClient, Observer

MAX_EVENT_BYTES = 64 * 1024  # a propertyset of a few variables; miniupnpd's are under 1 KiB
REQUESTED_SECONDS = 1800  # the spec's recommended minimum; the router may grant less


@dataclass(frozen=True)
class Event:
    sid: str
    seq: int
    properties: dict[str, str]  # evented state variable -> new value


@dataclass(frozen=True)
class Subscription:
    sid: str
    seconds: int  # how long the router grants it; renew well before it runs out


class EventListener:
    """Receives NOTIFY requests from `router_host` on `host`:`port` (0: any free port)."""

    def __init__(self, host: str, router_host: str, on_event: Callable[[Event], None], port: int = 0) -> None:
        self.router_host = router_host
        self.on_event = on_event
        self.path = f"/portctl/events/{secrets.token_urlsafe(12)}"
        self._server = BackgroundServer(host, port, _handler(self), "portctl-gena")

    @property
    def callback(self) -> str:
        return f"http://{self._server.address}{self.path}"

    def start(self) -> EventListener:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def subscribe(event_url: str, callback: str, timeout: float, observe: Observer | None = None) -> Subscription:
    """`observe` (--trace) sees the request and its answer, as it sees every SOAP call."""
    return _request("SUBSCRIBE", event_url, timeout, observe, CALLBACK=f"<{callback}>", NT="upnp:event")


def renew(event_url: str, sid: str, timeout: float, observe: Observer | None = None) -> Subscription:
    """Extend `sid`; a router that rebooted has forgotten it and answers 412 (RouterProtocolError)."""
    return _request("SUBSCRIBE", event_url, timeout, observe, SID=sid)


def unsubscribe(event_url: str, sid: str, timeout: float, observe: Observer | None = None) -> None:
    _request("UNSUBSCRIBE", event_url, timeout, observe, SID=sid)


def _request(method: str, event_url: str, timeout: float, observe: Observer | None, **headers: str) -> Subscription:
    """One GENA request; `observe` sees it once its answer is judged, with the SID (or the refusal) noted."""
    seen: list[Exchange] = []
    note = ""
    try:
        sub = _ask(method, event_url, timeout, seen.append if observe else None, headers)
        note = f"SID {sub.sid}" + (f" for {sub.seconds}s" if method == "SUBSCRIBE" else "")
        return sub
    except RouterError as exc:
        note = str(exc)
        raise
    finally:
        # The subscription lives in headers, which the bare exchange does not carry: say what came of it.
        if observe is not None:
            for x in seen:
                observe(replace(x, action="", note=note if x.status is not None else ""))


def _ask(
    method: str, event_url: str, timeout: float, observe: Observer | None, headers: dict[str, str]
) -> Subscription:
    parts = urlsplit(event_url)
    if parts.scheme != "http" or not parts.hostname:
        raise RouterProtocolError(f"the router's event URL {event_url!r} is not an http:// URL")
    if method == "SUBSCRIBE":
        headers["TIMEOUT"] = f"Second-{REQUESTED_SECONDS}"
    # One request by one deadline (a router trickling its answer cannot hold the agent's loop),
    # and a small cap: a subscription's answer has no body worth reading.
    client = HttpClient(parts.hostname, parts.port or 80, timeout=timeout, max_body=4096, observe=observe)
    try:
        resp = client.request(method, parts.path or "/", method, headers=headers)
    finally:
        client.close()
    if resp.status != 200:
        raise RouterProtocolError(f"{method} {event_url} answered HTTP {resp.status}")
    if method == "UNSUBSCRIBE":
        return Subscription(headers["SID"], 0)
    sid = resp.headers.get("sid", "").strip()
    if not sid.startswith("uuid:") or len(sid) > 100:
        raise RouterProtocolError(f"{method} {event_url} answered without a usable SID")
    try:
        seconds = timeout_seconds(resp.headers.get("timeout", ""), REQUESTED_SECONDS)
    except NotANumber as exc:
        raise RouterProtocolError(f"{method} {event_url} answered a malformed TIMEOUT header: {exc}") from None
    return Subscription(sid, seconds)


def timeout_seconds(header: str, limit: int) -> int:
    """A GENA TIMEOUT header in seconds, at most `limit`: `Second-1800` -> 1800.

    `infinite`, 0 or no header give `limit`: a subscriber renewing early loses nothing, and a
    router keeping a subscription too long only sends events nobody hears. Anything else is not a
    TIMEOUT header: NotANumber.
    """
    value = header.strip().lower()
    if value in ("", "infinite", "second-infinite"):
        return limit
    try:
        if not value.startswith("second-"):
            raise NotANumber(value, "Second-N")
        seconds = ascii_int(value.removeprefix("second-"), max_digits=10)
    except NotANumber:
        raise NotANumber(header, "a TIMEOUT such as Second-1800") from None
    return min(seconds, limit) if seconds > 0 else limit


def properties(body: bytes) -> dict[str, str]:
    """The variables of a GENA propertyset; RouterError if the body is not one."""
    root = xmlsafe.parse(body, "GENA event")
    if xmlsafe.local(root.tag) != "propertyset":
        raise RouterProtocolError("GENA event is not a propertyset")
    return {xmlsafe.local(var.tag): (var.text or "").strip() for prop in root for var in prop}


def _handler(listener: EventListener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a router that opens a NOTIFY and stalls must not hold a thread forever

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass

        def do_NOTIFY(self) -> None:
            if self.client_address[0] != listener.router_host or self.path != listener.path:
                self._answer(403)
                return
            if self.headers.get("NT") != "upnp:event" or self.headers.get("NTS") != "upnp:propchange":
                self._answer(412)
                return
            try:
                length = ascii_int(self.headers.get("Content-Length", "").strip(), max_digits=8)
            except NotANumber:
                length = MAX_EVENT_BYTES + 1
            if length > MAX_EVENT_BYTES:
                self._answer(413)
                return
            try:
                props = properties(self.rfile.read(length))
                seq = ascii_int(self.headers.get("SEQ", "0").strip(), max_digits=10)
            except (RouterError, NotANumber):
                self._answer(400)
                return
            # Accepted first, acknowledged after: a 200 means the event has been taken in.
            listener.on_event(Event(self.headers.get("SID", ""), seq, props))
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
