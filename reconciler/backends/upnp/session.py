"""A SOAP session with one router: control calls and description GETs over an injectable transport.

The transport is whatever `connect(host, port)` returns (an `http.HttpClient` unless a test hands in
another); the session adds the rest as wrappers around each attempt: the per-request deadline this
router has earned (`patience`), counting every request for `on_request`, and one more try when the
fallback table calls a failure a hiccup. It never follows a URL off the router's own host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from ... import quirks, urls
from ...errors import (
    ActionNotOffered,
    HttpStatusError,
    NotAnIGD,
    RouterError,
    RouterProtocolError,
    RouterTimeout,
    RouterUnreachable,
    UpnpActionError,
)
from ...quirks import Then
from .. import soap
from ..http import HttpClient, Observer, Response, default_timeout
from ..patience import Deadline, Patience

T = TypeVar("T")
OnRequest = Callable[[str, str], None]  # (action or "GET", UPnP error code, "" when it succeeded)


class Transport(Protocol):
    """What the session needs of an HTTP connection to the router (http.HttpClient is one)."""

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
    ) -> Response: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Service:
    """One connection service of the router: where to send its actions, and which it offers."""

    service_type: str
    control_url: str
    scpd_url: str
    actions: frozenset[str]
    event_url: str = ""


class Session:
    """Requests to the router at `host`, one transport per port, kept open between requests."""

    def __init__(
        self,
        host: str,
        *,
        timeout: float | None = None,
        observe: Observer | None = None,
        on_request: OnRequest | None = None,
        connect: Callable[[str, int], Transport] | None = None,
        source: str = "",
    ) -> None:
        self.host = host  # as a socket takes it: an IPv6 address bare, a link-local one with its zone (`%eth0`)
        self.source = source  # the local address requests leave from ("" for the route's choice)
        self.timeout = default_timeout() if timeout is None else timeout
        self.patience = Patience(self.timeout)  # per-request deadlines that follow how slow this router is
        self.on_request = on_request
        wait = self.timeout
        self._connect = connect or (lambda h, p: HttpClient(h, p, timeout=wait, observe=observe, source=source))
        self._clients: dict[tuple[str, int], Transport] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def call(self, service: Service, action: str, **args: str) -> dict[str, str]:
        """`action` on `service`: its output arguments, or the RouterError family."""
        if action not in service.actions:
            raise ActionNotOffered(action, service.scpd_url)
        return once_more(action, lambda: counted(self.on_request, action, lambda: self._soap(service, action, args)))

    def get(self, url: str, what: str) -> bytes:
        """The document at `url` (`what` names it in errors)."""
        return once_more("GET", lambda: counted(self.on_request, "GET", lambda: self._get_once(url, what)))

    def check_same_host(self, url: str) -> None:
        # A description pointing its control URL elsewhere would make us send requests to a
        # host nobody chose. A router reached at its link-local address may name it without the zone
        # (the zone is this host's); its global address, though, could be anyone's: refused.
        # miniupnpd 2.3.1 writes relative control URLs and no URLBase (measured on the lab), so they
        # resolve to the very address its description was fetched from, zone included.
        if not urls.same_host(urls.host(url), self.host):
            raise RouterProtocolError(f"the router description points to another host: {url}")

    def _soap(self, service: Service, action: str, args: dict[str, str]) -> dict[str, str]:
        client, target = self._client(service.control_url)
        body = soap.envelope(service.service_type, action, args)
        headers = soap.headers(service.service_type, action)
        resp = self._timed(
            action, lambda d: client.request("POST", target, action, body, headers, timeout=d.seconds, why=d.why)
        )
        return soap.answer(action, resp.status, resp.body)

    def _get_once(self, url: str, what: str) -> bytes:
        client, target = self._client(url)
        resp = self._timed("GET", lambda d: client.request("GET", target, timeout=d.seconds, why=d.why))
        if resp.status >= 500:
            raise HttpStatusError(f"{url} answered HTTP {resp.status} for the {what}", resp.status)
        if resp.status != 200:
            raise NotAnIGD(f"{url} answered HTTP {resp.status} for the {what}")
        return resp.body

    def _client(self, url: str) -> tuple[Transport, str]:
        parts = urlsplit(url)
        if parts.scheme != "http" or not urls.same_host(urls.host(url), self.host):
            raise RouterProtocolError(f"refusing to follow {url!r}: not http:// on the router's own address")
        port = parts.port or 80
        client = self._clients.get((self.host, port))
        if client is None:
            client = self._clients[(self.host, port)] = self._connect(self.host, port)
        return client, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _timed(self, action: str, send: Callable[[Deadline], Response]) -> Response:
        """`send` with the deadline this router has earned for `action`; how long it took is remembered."""
        deadline = self.patience.deadline(action)
        start = self.patience.clock()
        try:
            resp = send(deadline)
        except RouterTimeout:
            self.patience.observe(action, deadline.seconds, timed_out=True)
            raise
        self.patience.observe(action, self.patience.clock() - start)
        return resp


def counted(on_request: OnRequest | None, action: str, attempt: Callable[[], T]) -> T:
    """One request, reported to `on_request` with its UPnP error code ("" if it succeeded)."""
    if on_request is None:
        return attempt()
    try:
        result = attempt()
    except UpnpActionError as exc:
        on_request(action, str(exc.code))
        raise
    except RouterUnreachable:
        on_request(action, "unreachable")
        raise
    except RouterError:
        on_request(action, "malformed")
        raise
    on_request(action, "")
    return result


def once_more(action: str, attempt: Callable[[], T]) -> T:
    """Run `attempt`; if the fallback table calls its failure a hiccup, run it once more."""
    try:
        return attempt()
    except RouterError as exc:
        decision = quirks.decide(action, exc, again=True)
        if decision is None or decision.then is not Then.AGAIN:
            raise
        return attempt()
