"""UPnP IGD over HTTP and SOAP.

Descriptions are fetched with a size cap and parsed by `xmlsafe` (no DTDs, no entities); control
messages are built and read by `soap`, over `http` (one kept-alive connection, a deadline per
request). What a router answers can only ever surface as portctl's RouterError family.

A router's description and chosen service are cached by location (and configId, when SSDP gave
one), so a warm run goes straight to the control URL; a control URL that no longer answers as one
sends the backend back to the description.

Reading the table: Debian's miniupnpd 2.3.1 overflows a 128-entry buffer when a GetListOfPortMappings
range holds more than 128 entries of one protocol: up to 132 it answers 128 of them, the newest, not
the lowest ports; past that it crashes, and NewNumberOfPorts does not prevent it. `paging` decides
which port ranges are safe to list; a table it cannot vouch for is read entry by entry with
GetGenericPortMappingEntry, which is slow but cannot crash the router. A page that comes back full is
read again in parts; the GetGenericPortMappingEntry probe that bounds the table before listing also
proves the pages held all of it when they add up to that bound (`paging.bounds`).

What an error code means (retry, fall back, give up) is not decided here: every failed action is
looked up in the fallback table, `quirks.RULES`, and what the router needed is recorded in
`self.learned`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from .. import discovery, paging, quirks, xmlsafe
from ..cache import Cache
from ..errors import (
    ActionNotOffered,
    HttpStatusError,
    NotAnIGD,
    RouterError,
    RouterProtocolError,
    RouterRefused,
    RouterTimeout,
    RouterUnreachable,
    UpnpActionError,
)
from ..models import MappingKey, PortMapping, Protocol, RouterInfo
from ..numbers import NotANumber, ascii_int
from ..quirks import Learned, Quirk, Then
from . import soap
from .base import Backend
from .http import HttpClient, Observer, Response, default_timeout
from .patience import Deadline, Patience

# Preferred first: v2 has GetListOfPortMappings; PPP is what PPPoE DSL boxes offer; the
# dslforum-org names are TR-064's, which some ISP boxes (Huawei HG531) use for their IGD too.
CONNECTION_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    "urn:dslforum-org:service:WANIPConnection:1",
    "urn:dslforum-org:service:WANPPPConnection:1",
)
MAX_ENTRIES = 2 * 65535  # no table can hold more distinct mappings; bounds a router that loops
T = TypeVar("T")


@dataclass(frozen=True)
class _Page:
    """What one GetListOfPortMappings gave for one port range."""

    protocol: Protocol
    start: int
    end: int
    rows: tuple[PortMapping, ...]

    def covers(self, key: MappingKey) -> bool:
        return key.protocol is self.protocol and self.start <= key.external_port <= self.end


@dataclass(frozen=True)
class _Service:
    service_type: str
    control_url: str
    scpd_url: str
    actions: frozenset[str]
    event_url: str = ""


DESCRIPTION_TTL = 3600.0  # seconds a cached description is trusted without a configId to check


@dataclass(frozen=True)
class _Description:
    """What the description documents said, and which connection service was chosen."""

    location: str
    config_id: str
    udn: str
    friendly_name: str
    igd_version: int
    service: _Service
    external_ip: str = ""

    @classmethod
    def cached(cls, cache: Cache, location: str, config_id: str) -> _Description | None:
        record = cache.get("descriptions", location, DESCRIPTION_TTL)
        if record is None or (config_id and record.get("config_id") != config_id):
            return None
        try:
            svc = record["service"]
            service = _Service(
                str(svc["service_type"]),
                str(svc["control_url"]),
                str(svc["scpd_url"]),
                frozenset(str(a) for a in svc["actions"]),
                str(svc.get("event_url", "")),
            )
            return cls(
                location,
                str(record.get("config_id", "")),
                str(record["udn"]),
                str(record.get("friendly_name", "")),
                int(record["igd_version"]),
                service,
            )
        except (KeyError, TypeError, ValueError):
            return None  # written by another version; the router will be described again

    def store(self, cache: Cache) -> None:
        svc = self.service
        cache.put(
            "descriptions",
            self.location,
            {
                "config_id": self.config_id,
                "udn": self.udn,
                "friendly_name": self.friendly_name[:100],
                "igd_version": self.igd_version,
                "service": {
                    "service_type": svc.service_type,
                    "control_url": svc.control_url,
                    "scpd_url": svc.scpd_url,
                    "event_url": svc.event_url,
                    "actions": sorted(svc.actions),
                },
            },
        )


class UpnpBackend(Backend):
    """A router at `location`. With `config_id` (from SSDP), a cached description is used only if it
    was fetched under the same configId; `fresh` ignores the cache (after a reconnect, say, when the
    router may have been replaced). Without a `cache`, nothing is remembered between backends.
    `observe` sees every HTTP exchange (--trace)."""

    def __init__(
        self,
        location: str,
        *,
        cache: Cache | None = None,
        timeout: float | None = None,
        on_request: Callable[[str, str], None] | None = None,
        observe: Observer | None = None,
        config_id: str = "",
        fresh: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.location = location
        self.cache = cache or Cache(None)
        self.clock = clock or self.cache.clock  # when a lesson was seen
        self.timeout = default_timeout() if timeout is None else timeout
        self.patience = Patience(self.timeout)  # per-request deadlines that follow how slow this router is
        self.on_request = on_request
        self.observe = observe
        parts = urlsplit(location)
        if parts.scheme != "http" or not parts.hostname:
            raise RouterUnreachable(f"{location!r} is not an http:// URL of a router description")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._clients: dict[tuple[str, int], HttpClient] = {}
        self._local = ""
        # A mapping to another host seen in the table or granted by the router; what disproves
        # secure mode when a later add is refused.
        self._other_host_held = ""
        self.learned = Learned()
        cached = None if fresh else _Description.cached(self.cache, location, config_id)
        if cached is not None:
            external_ip: str | None
            try:
                external_ip = _address_text(self._call("GetExternalIPAddress", service=cached.service))
            except UpnpActionError as exc:
                # 401: the control URL no longer serves that service; any other fault is its answer.
                external_ip = None if exc.code == 401 else ""
            except (RouterProtocolError, NotAnIGD, ActionNotOffered):
                external_ip = None  # the router changed under the same location: describe it again
            if external_ip is not None:
                self._adopt(cached, external_ip)
                return
        described = self._describe(config_id)
        self._adopt(described, described.external_ip)
        described.store(self.cache)

    def _adopt(self, described: _Description, external_ip: str) -> None:
        self._service = described.service
        self.info = RouterInfo(
            location=self.location,
            udn=described.udn,
            friendly_name=described.friendly_name,
            igd_version=described.igd_version,
            service_type=described.service.service_type,
            external_ip=external_ip,
        )

    def _describe(self, config_id: str) -> _Description:
        root = xmlsafe.parse(self._get(self.location, "device description"), f"device description at {self.location}")
        device, candidates = self._connection_services(root)
        service, external_ip = self._choose(candidates)
        return _Description(
            location=self.location,
            config_id=root.get("configId", "") or config_id,
            udn=xmlsafe.printable(xmlsafe.text(device, "UDN")),
            friendly_name=xmlsafe.printable(xmlsafe.text(device, "friendlyName"), 100),
            igd_version=2 if xmlsafe.text(device, "deviceType").endswith(":2") else 1,
            service=service,
            external_ip=external_ip,
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # -- description -----------------------------------------------------------------------

    def _connection_services(self, root: Element) -> tuple[Element, list[_Service]]:
        """Every WAN connection service the device offers, most capable first."""
        if xmlsafe.local(root.tag) != "root" or not xmlsafe.children(root, "device"):
            raise NotAnIGD(f"{self.location} is not a UPnP device description")
        device = xmlsafe.children(root, "device")[0]
        base = xmlsafe.text(root, "URLBase") or self.location
        found = [(xmlsafe.text(svc, "serviceType"), svc) for svc in _services(device)]
        candidates = []
        for service_type in CONNECTION_SERVICES:
            for found_type, svc in found:
                if found_type == service_type:
                    scpd_url = urljoin(base, xmlsafe.text(svc, "SCPDURL"))
                    control_url = urljoin(base, xmlsafe.text(svc, "controlURL"))
                    self._check_same_host(control_url)
                    self._check_same_host(scpd_url)
                    event = xmlsafe.text(svc, "eventSubURL")
                    event_url = urljoin(base, event) if event else ""
                    if event_url:
                        self._check_same_host(event_url)
                    actions = self._actions(scpd_url)
                    candidates.append(_Service(service_type, control_url, scpd_url, actions, event_url))
        if not candidates:
            kind = xmlsafe.text(device, "deviceType") or "unknown device"
            raise NotAnIGD(
                f"{self.location} is a {kind} without a WANIPConnection or WANPPPConnection service; "
                "is it an Internet Gateway Device?"
            )
        return device, candidates

    def _choose(self, candidates: list[_Service]) -> tuple[_Service, str]:
        """The connection that is up with a public address, then one that is up, then the first.

        Routers with two WAN connections (MikroTik CHR, dual-WAN and PPPoE-plus-IPTV boxes) list
        dead ones too, and a mapping on a dead connection is accepted and never reachable.
        """
        if len(candidates) == 1:
            return candidates[0], self._external_address(candidates[0])
        scored = []
        for rank, service in enumerate(candidates):
            up = self._connected(service)
            address = self._external_address(service) if up else ""
            public = bool(address) and not quirks.wan_blocker(address)
            if up and public:
                return service, address
            scored.append(((not up, not address, rank), service, address))
        _, service, address = min(scored, key=lambda s: s[0])
        return service, address

    def _connected(self, service: _Service) -> bool:
        try:
            status = self._call("GetStatusInfo", service=service).get("NewConnectionStatus")
        except RouterUnreachable:
            return False  # a connection that does not answer is not one to put mappings on
        except RouterError:
            return True  # a refusal (no such action): no status to go by; the external address decides
        return str(status or "").strip() in ("Connected", "Up")

    def _actions(self, scpd_url: str) -> frozenset[str]:
        scpd = xmlsafe.parse(self._get(scpd_url, "service description"), f"service description at {scpd_url}")
        names = set()
        for action_list in xmlsafe.children(scpd, "actionList"):
            for action in xmlsafe.children(action_list, "action"):
                names.add(xmlsafe.text(action, "name"))
        return frozenset(names)

    def _check_same_host(self, url: str) -> None:
        # A description pointing its control URL elsewhere would make us send requests to a
        # host nobody chose.
        if urlsplit(url).hostname != self._host:
            raise RouterProtocolError(f"the router description points to another host: {url}")

    def _get(self, url: str, what: str) -> bytes:
        return _once_more("GET", lambda: self._counted("GET", lambda: self._get_once(url, what)))

    def _client(self, url: str) -> tuple[HttpClient, str]:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname != self._host:
            raise RouterProtocolError(f"refusing to follow {url!r}: not http:// on the router's own address")
        port = parts.port or 80
        client = self._clients.get((self._host, port))
        if client is None:
            client = self._clients[(self._host, port)] = HttpClient(
                self._host, port, timeout=self.timeout, observe=self.observe
            )
        return client, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _counted(self, action: str, attempt: Callable[[], T]) -> T:
        """One request, reported to `on_request` with its UPnP error code ("" if it succeeded)."""
        if self.on_request is None:
            return attempt()
        try:
            result = attempt()
        except UpnpActionError as exc:
            self.on_request(action, str(exc.code))
            raise
        except RouterUnreachable:
            self.on_request(action, "unreachable")
            raise
        except RouterError:
            self.on_request(action, "malformed")
            raise
        self.on_request(action, "")
        return result

    def _get_once(self, url: str, what: str) -> bytes:
        client, target = self._client(url)
        resp = self._timed("GET", lambda d: client.request("GET", target, timeout=d.seconds, why=d.why))
        if resp.status >= 500:
            raise HttpStatusError(f"{url} answered HTTP {resp.status} for the {what}", resp.status)
        if resp.status != 200:
            raise NotAnIGD(f"{url} answered HTTP {resp.status} for the {what}")
        return resp.body

    # -- actions ---------------------------------------------------------------------------

    def _call(self, action: str, *, service: _Service | None = None, **args: str) -> dict[str, str]:
        service = service or self._service
        if action not in service.actions:
            raise ActionNotOffered(action, service.scpd_url)
        return _once_more(action, lambda: self._counted(action, lambda: self._soap(service, action, args)))

    def _soap(self, service: _Service, action: str, args: dict[str, str]) -> dict[str, str]:
        client, target = self._client(service.control_url)
        body = soap.envelope(service.service_type, action, args)
        headers = soap.headers(service.service_type, action)
        resp = self._timed(
            action, lambda d: client.request("POST", target, action, body, headers, timeout=d.seconds, why=d.why)
        )
        return soap.answer(action, resp.status, resp.body)

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

    def _external_address(self, service: _Service) -> str:
        try:
            return _address_text(self._call("GetExternalIPAddress", service=service))
        except (UpnpActionError, ActionNotOffered):
            return ""

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
        if "GetListOfPortMappings" not in self._service.actions or Quirk.NO_PORT_LISTING in self.learned:
            return self._list_by_index()
        last = self.cache.get("tables", self.info.udn)
        rows = None
        paged = self._pages(last)
        if paged is not None:
            pages, bound = paged
            read: list[_Page] = []
            try:
                for proto in Protocol:
                    for start, end in pages[proto]:
                        read += self._list(proto, start, end)
                rows = list({m.key: m for page in read for m in page.rows}.values())
            except RouterError as exc:
                if not self._means("GetListOfPortMappings", exc, Then.FALL_BACK):
                    raise
                self.learned.learn(Quirk.NO_PORT_LISTING, f"GetListOfPortMappings: {exc}", now=self.clock())
            if rows is not None and not paging.proven_whole(bound, len(rows)) and not self._past_end(len(rows)):
                # The table holds more than the pages gave: some page was cut short without looking full.
                rows = self._list_by_index()
                self._learn_cap(read, rows)
        if rows is None:
            rows = self._list_by_index()
        self._remember_ports(rows, last)
        self._saw(rows, whole_table=True)
        return rows

    def _pages(
        self, last: dict[str, object] | None
    ) -> tuple[dict[Protocol, list[tuple[int, int]]], int] | None:
        """Port ranges to list per protocol, each safe for the router, given where the ports lay
        `last` time, and the size a probe showed the table within; None when no paging can be vouched for."""
        last = last or {}
        total = last.get("total")
        cut_points = {proto: _ints(last.get(proto.value)) for proto in Protocol}
        known = isinstance(total, int) and all(c is not None for c in cut_points.values())
        for bound in paging.bounds(total if known and isinstance(total, int) else None):
            if self._past_end(bound):
                return {proto: paging.ranges(points or []) for proto, points in cut_points.items()}, bound
        return None  # grown by more than the pages leave room for, or big and never read with listings

    def _remember_ports(self, rows: list[PortMapping], last: dict[str, object] | None) -> None:
        """The size this read proved and where its ports lie, to cut and check the next read."""
        now: dict[str, object] = {"total": len(rows)}
        for proto in Protocol:
            now[proto.value] = paging.cuts(m.key.external_port for m in rows if m.key.protocol is proto)
        if last is None or any(last.get(k) != v for k, v in now.items()):
            self.cache.put("tables", self.info.udn, now)

    def _past_end(self, index: int) -> bool:
        """Does the table hold at most `index` entries? One GetGenericPortMappingEntry tells."""
        try:
            self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(index))
        except RouterError as exc:
            if not self._means("GetGenericPortMappingEntry", exc, Then.END):
                raise
            return True
        return False

    def _list(self, protocol: Protocol, start: int, end: int) -> list[_Page]:
        """The pages that read one range. A full page is never taken as complete: miniupnpd 2.3.1
        answers 128 of a range's rows, the newest, not the lowest ports. The range is split at the
        middle of what it gave, and each part read again, until every page came back short."""
        rows = self._list_range(protocol, start, end)
        cap = min(paging.PAGE_LIMIT, self.learned.list_cap or paging.PAGE_LIMIT)
        if len(rows) < cap or start == end:
            return [_Page(protocol, start, end, tuple(rows))]
        ports = sorted(m.key.external_port for m in rows)
        middle = min(max(ports[len(ports) // 2 - 1], start), end - 1)
        return self._list(protocol, start, middle) + self._list(protocol, middle + 1, end)

    def _learn_cap(self, pages: list[_Page], table: list[PortMapping]) -> None:
        """Remember a cap from pages that the whole table shows were cut short, so later reads split them."""
        cut = []
        for page in pages:
            held = sum(1 for m in table if page.covers(m.key))
            if page.rows and held > len(page.rows):
                cut.append((len(page.rows), held, page))
        if cut:
            got, held, page = min(cut, key=lambda c: c[0])
            evidence = (
                f"GetListOfPortMappings answered {got} of the {held} {page.protocol.value} mappings "
                f"in ports {page.start}-{page.end}"
            )
            quirks.learn_list_cap(self.learned, got, evidence, self.clock())

    def _list_range(self, protocol: Protocol, start: int, end: int) -> list[PortMapping]:
        try:
            out = self._call(
                "GetListOfPortMappings",
                NewStartPort=str(start),
                NewEndPort=str(end),
                NewProtocol=protocol.value,
                NewManage="1",
                NewNumberOfPorts=str(paging.PAGE_LIMIT),
            )
        except UpnpActionError as exc:
            if self._means("GetListOfPortMappings", exc, Then.EMPTY):
                return []
            raise
        listing = out.get("NewPortListing") or ""
        if not listing.strip():
            return []
        root = xmlsafe.parse(listing, "GetListOfPortMappings listing")
        rows = []
        for entry in root.iter():
            if xmlsafe.local(entry.tag) == "PortMappingEntry":
                fields = {xmlsafe.local(e.tag): (e.text or "").strip() for e in entry}
                # The listing's element names differ from GetGenericPortMappingEntry's arguments.
                fields["NewPortMappingDescription"] = fields.get("NewDescription", "")
                fields["NewLeaseDuration"] = fields.get("NewLeaseTime", "0")
                rows.append(fields)
        return [m for m in (_mapping(row, "GetListOfPortMappings") for row in rows) if m is not None]

    def _list_by_index(self) -> list[PortMapping]:
        seen: dict[MappingKey, PortMapping] = {}
        for index in range(MAX_ENTRIES):
            try:
                out = self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(index))
            except RouterError as exc:
                if self._means("GetGenericPortMappingEntry", exc, Then.END):
                    break
                raise
            mapping = _mapping({k: "" if v is None else str(v) for k, v in out.items()}, "GetGenericPortMappingEntry")
            if mapping is not None:
                seen.setdefault(mapping.key, mapping)
        return list(seen.values())

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
        return _mapping(
            {**fields, "NewExternalPort": str(key.external_port), "NewProtocol": key.protocol.value},
            "GetSpecificPortMappingEntry",
        )

    def add_mapping(self, mapping: PortMapping) -> None:
        """Write exactly `mapping`. A refusal that shows a need (a permanent lease, any remote host...)
        is learned and raised as RouterRefused naming it: adapting the mapping is the planner's job,
        so nothing the plan did not show is ever written."""
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
        return _address_text(self._call("GetExternalIPAddress"))

    def uptime(self) -> int | None:
        try:
            value = str(self._call("GetStatusInfo").get("NewUptime") or "")
        except (UpnpActionError, ActionNotOffered):
            return None
        if not value.strip():
            return None  # a router that does not count its uptime
        return _number(value.strip(), "GetStatusInfo", "NewUptime")

    def local_address(self) -> str:
        if not self._local:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((self._host, self._port))  # UDP connect sends nothing; it picks the route
                except OSError as exc:
                    raise RouterUnreachable(f"no route to the router at {self._host}: {exc}") from exc
                self._local = str(s.getsockname()[0])
        return self._local


def _services(device: Element) -> list[Element]:
    out: list[Element] = []
    for service_list in xmlsafe.children(device, "serviceList"):
        out += xmlsafe.children(service_list, "service")
    for device_list in xmlsafe.children(device, "deviceList"):
        for sub in xmlsafe.children(device_list, "device"):
            out += _services(sub)
    return out


def _mapping(fields: dict[str, str], action: str) -> PortMapping | None:
    """A table row `action` answered, or None for a row that no declared mapping could be (unknown
    protocol, port out of range). A number that is not one makes the answer malformed."""
    try:
        protocol = Protocol(fields.get("NewProtocol", "").strip().upper())
    except ValueError:
        return None
    port = _number(fields.get("NewExternalPort", "").strip(), action, "NewExternalPort")
    internal_port = _number(fields.get("NewInternalPort", "").strip() or "0", action, "NewInternalPort")
    lease = _number(fields.get("NewLeaseDuration", "").strip() or "0", action, "NewLeaseDuration")
    if not 0 < port < 65536:
        return None
    enabled = fields.get("NewEnabled", "1").strip().lower() not in ("0", "false", "no")
    return PortMapping(
        key=MappingKey(port, protocol),
        internal_client=xmlsafe.printable(fields.get("NewInternalClient", "").strip(), 64),
        internal_port=internal_port,
        # Printable, so a foreign row cannot put terminal escapes into a plan or a log line.
        description=xmlsafe.printable(fields.get("NewPortMappingDescription", ""), 256),
        lease=lease,
        enabled=enabled,
        remote_host=xmlsafe.printable(fields.get("NewRemoteHost", "").strip(), 64),
    )


def _number(text: str, action: str, field: str) -> int:
    """A whole number the router sent (ports, leases, uptime are ui2/ui4: ten digits at most)."""
    try:
        return ascii_int(text, max_digits=10)
    except NotANumber as exc:
        raise RouterProtocolError(f"{action}: malformed answer from the router ({field} {exc})") from None


def _ints(value: object) -> list[int] | None:
    """A list of integers from the cache, or None for anything else."""
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    return None


def _address_text(out: dict[str, str]) -> str:
    return xmlsafe.printable(out.get("NewExternalIPAddress", "").strip(), 64)


def _once_more(action: str, attempt: Callable[[], T]) -> T:
    """Run `attempt`; if the fallback table calls its failure a hiccup, run it once more."""
    try:
        return attempt()
    except RouterError as exc:
        decision = quirks.decide(action, exc, again=True)
        if decision is None or decision.then is not Then.AGAIN:
            raise
        return attempt()


__all__ = ["RouterError", "UpnpBackend"]
