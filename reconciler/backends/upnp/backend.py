"""The UPnP IGD backend: the Backend interface over a SOAP session, and `connect`, which builds one.

`connect` does the network I/O (describing the router, through the description cache); the backend
it returns is put together from the pieces, each with one job: `description` (which router, which
connection service), `session` (SOAP over a kept-alive transport, with deadlines, retries and
counting), `table` (reading the whole table in safe pages). What the backend itself does is
writing and deleting single mappings, reading single facts, and turning refusals into lessons.

What an error code means (retry, fall back, give up) is not decided here: every failed action is
looked up in the fallback table, `quirks.RULES`, and what the router needed is recorded in
`self.learned`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from ... import discovery, quirks
from ...cache import Cache
from ...errors import ActionNotOffered, RouterError, RouterRefused, RouterUnreachable, UpnpActionError
from ...models import MAX_LEASE, MappingKey, PortMapping, PortWindow, upnp_router
from ...quirks import Learned, Then
from ..base import Backend, Capabilities
from ..http import Observer
from .description import Description, address_text, describe
from .session import OnRequest, Service, Session, Transport
from .table import TableReader, number, parse_row

SSDP_WAIT = 1.0  # seconds a BOOTID search waits: the router is on the LAN, and unknown is no harm
SSDP_TRIES = 3  # unanswered BOOTID searches in a row before a connection stops asking


def connect(
    location: str,
    *,
    cache: Cache | None = None,
    timeout: float | None = None,
    on_request: OnRequest | None = None,
    observe: Observer | None = None,
    config_id: str = "",
    fresh: bool = False,
    clock: Callable[[], float] | None = None,
    transport: Callable[[str, int], Transport] | None = None,
) -> UpnpBackend:
    """The router at `location`, described. With `config_id` (from SSDP), a cached description is
    used only if it was fetched under the same configId; `fresh` ignores the cache (after a
    reconnect, say, when the router may have been replaced). Without a `cache`, nothing is
    remembered between backends. `observe` sees every HTTP exchange (--trace); `on_request` counts
    every request; `transport` replaces the HTTP client (one per port). `timeout` is each request's
    wait (PORTCTL_TIMEOUT's, or 5 s, when None)."""
    cache = cache or Cache(None)
    parts = urlsplit(location)
    if parts.scheme != "http" or not parts.hostname:
        raise RouterUnreachable(f"{location!r} is not an http:// URL of a router description")
    session = Session(parts.hostname, timeout=timeout, observe=observe, on_request=on_request, connect=transport)
    try:
        described = describe(session, location, cache, config_id=config_id, fresh=fresh)
    except BaseException:
        session.close()
        raise
    return UpnpBackend(described, session, cache=cache, port=parts.port or 80, clock=clock)


class UpnpBackend(Backend):
    """The router `described`, spoken to through `session`. Building one sends nothing."""

    def __init__(
        self,
        described: Description,
        session: Session,
        *,
        cache: Cache,
        port: int = 80,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.location = described.location
        self.cache = cache
        self.clock = clock or cache.clock  # when a lesson was seen
        self.session = session
        self._service: Service = described.service
        self._port = port
        self._local = ""
        # A mapping to another host seen in the table or granted by the router; what disproves
        # secure mode when a later add is refused.
        self._other_host_held = ""
        # Where its SSDP listens, for BOOTID; False once it has not answered there (asked no more).
        self.ssdp_port = discovery.SSDP_ADDR[1]
        self._ssdp_misses = 0  # unanswered BOOTID asks in a row
        self.learned = Learned()
        self.info = upnp_router(
            described.location,
            described.udn,
            described.friendly_name,
            described.igd_version,
            described.service.service_type,
            described.external_ip,
        )
        self.capabilities = Capabilities(
            can_list=True,
            can_describe=True,
            picks_external_port=False,  # AddPortMapping takes the port it is given (AddAnyPortMapping is unused)
            sends_events=bool(described.service.event_url),
            longest_lease=MAX_LEASE,
        )
        self.table = TableReader(
            self._call,
            actions=self._service.actions,
            cache=cache,
            identity=described.udn,
            learned=lambda: self.learned,
            means=self._means,
            clock=self.clock,
        )

    def close(self) -> None:
        self.session.close()

    def _call(self, action: str, **args: str) -> dict[str, str]:
        return self.session.call(self._service, action, **args)

    def _request(self, mapping: PortMapping | None) -> quirks.Request:
        """What the fallback table needs to judge a refusal of `mapping`."""
        return quirks.Request(
            mapping,
            self.local_or_unknown(),
            lan=tuple(discovery.local_subnets()) or None,  # no routing table to read: unknown
            other_host_held=self._other_host_held,
        )

    def _saw(self, rows: list[PortMapping], *, whole_table: bool = False) -> None:
        """Note a mapping to another host among `rows`; a whole table read replaces older evidence."""
        local = self.local_or_unknown()
        other = next((m for m in rows if local and m.internal_client not in ("", local)), None)
        if other is not None:
            self._other_host_held = f"{other.internal_client} ({other.key})"
        elif whole_table:
            self._other_host_held = ""

    def _decide(self, action: str, exc: RouterError, mapping: PortMapping | None = None) -> quirks.Decision | None:
        return quirks.decide(action, exc, self._request(mapping))

    def _means(self, action: str, exc: RouterError, then: Then) -> bool:
        """Does the fallback table read this failure of a table read as `then`?"""
        decision = self._decide(action, exc)
        return decision is not None and decision.then is then

    def list_mappings(self) -> list[PortMapping]:
        rows = self.table.list_mappings()
        self._saw(rows, whole_table=True)
        return rows

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        try:
            out = self._call(
                "GetSpecificPortMappingEntry",
                NewRemoteHost="",
                NewExternalPort=str(key.external_port),
                NewProtocol=key.protocol.value,
            )
        except UpnpActionError as exc:
            if self._means("GetSpecificPortMappingEntry", exc, Then.EMPTY):
                return None
            raise
        fields = {k: "" if v is None else str(v) for k, v in out.items()}
        return parse_row(
            {**fields, "NewExternalPort": str(key.external_port), "NewProtocol": key.protocol.value},
            "GetSpecificPortMappingEntry",
        )

    def add_mapping(self, mapping: PortMapping, window: PortWindow | None = None) -> None:
        """Write exactly `mapping`. A refusal that shows a need (a permanent lease, any remote host...)
        is learned and raised as RouterRefused naming it: adapting the mapping is the planner's job,
        so nothing the plan did not show is ever written. AddPortMapping takes the port it is given:
        `window` is moot here."""
        try:
            self._add(mapping)
        except UpnpActionError as exc:
            decision = quirks.decide("AddPortMapping", exc, self._request(mapping))
            if decision is None:
                raise
            if decision.learn:
                evidence = f"AddPortMapping answered {exc.code} {exc.description}".strip()
                self.learned.learn(decision.learn, evidence, now=self.clock(), proven=decision.proven)
            need = decision.learn.value if decision.then is Then.NEED and decision.learn else ""
            raise RouterRefused(
                "AddPortMapping",
                exc.code,
                decision.why,
                stop=decision.then is Then.STOP,
                need=need,
                proven=decision.proven,
            ) from exc
        self._saw([mapping])

    def _add(self, mapping: PortMapping) -> None:
        self._call(
            "AddPortMapping",
            NewRemoteHost=mapping.remote_host,
            NewExternalPort=str(mapping.key.external_port),
            NewProtocol=mapping.key.protocol.value,
            NewInternalPort=str(mapping.internal_port),
            NewInternalClient=mapping.internal_client,
            NewEnabled="1" if mapping.enabled else "0",
            NewPortMappingDescription=mapping.description,
            NewLeaseDuration=str(mapping.lease),
        )

    def delete_mapping(self, mapping: PortMapping) -> None:
        try:
            self._call(
                "DeletePortMapping",
                NewRemoteHost=mapping.remote_host,
                NewExternalPort=str(mapping.key.external_port),
                NewProtocol=mapping.key.protocol.value,
            )
        except UpnpActionError as exc:
            decision = self._decide("DeletePortMapping", exc, mapping)
            if decision is None:
                raise
            if decision.then is Then.DONE:
                return
            if decision.learn:
                self.learned.learn(decision.learn, f"DeletePortMapping answered {exc.code}", now=self.clock())
            raise RouterRefused("DeletePortMapping", exc.code, decision.why, stop=decision.then is Then.STOP) from exc

    def event_url(self) -> str:
        return self._service.event_url

    def external_address(self) -> str:
        return address_text(self._call("GetExternalIPAddress"))

    def uptime(self) -> int | None:
        try:
            value = str(self._call("GetStatusInfo").get("NewUptime") or "")
        except (UpnpActionError, ActionNotOffered):
            return None
        if not value.strip():
            return None  # a router that does not count its uptime
        return number(value.strip(), "GetStatusInfo", "NewUptime")

    def boot_id(self) -> int | None:
        """BOOTID.UPNP.ORG from a unicast M-SEARCH to the router. A router that has not answered it
        SSDP_TRIES times in a row is not asked again on this connection: each check between passes
        would wait a second for nothing. One lost or late answer (miniupnpd may delay even a unicast
        answer by up to MX) must not switch BOOTID off for good."""
        if self._ssdp_misses >= SSDP_TRIES:
            return None
        found = discovery.ask_boot_id(self.session.host, self.location, port=self.ssdp_port, timeout=SSDP_WAIT)
        self._ssdp_misses = 0 if found is not None else self._ssdp_misses + 1
        return found

    def local_address(self) -> str:
        if not self._local:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((self.session.host, self._port))  # UDP connect sends nothing; it picks the route
                except OSError as exc:
                    raise RouterUnreachable(f"no route to the router at {self.session.host}: {exc}") from exc
                self._local = str(s.getsockname()[0])
        return self._local


__all__ = ["RouterError", "UpnpBackend", "connect"]
