"""UPnP IGD over HTTP and SOAP: the only module that imports upnpclient or requests.

Descriptions are fetched here with a size cap and parsed by `xmlsafe` (no DTDs, no entities),
because upnpclient's own parser repairs malformed XML silently and one broken SCPD of an unrelated
service would fail its whole Device. Actions go through upnpclient's SOAP client; its exceptions
and requests' are translated into portctl's RouterError family at `_call`, the one place they can
escape from.

Reading the table: Debian's miniupnpd 2.3.1 aborts (heap overflow) when GetListOfPortMappings would
return more than 128 entries of one protocol, and NewNumberOfPorts does not prevent it. So the
listing is used only when index LIST_SAFE_ENTRIES is past the end of the table; larger tables are
read entry by entry with GetGenericPortMappingEntry, which is slow but cannot crash the router.

What an error code means (retry, fall back, give up) is not decided here: every failed action is
looked up in the fallback table, `quirks.RULES`, and what the router needed is recorded in
`self.learned`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from .. import quirks, xmlsafe
from ..errors import (
    ConnectionDropped,
    HttpStatusError,
    NotAnIGD,
    RouterError,
    RouterProtocolError,
    RouterRefused,
    RouterUnreachable,
    UpnpActionError,
)
from ..models import MappingKey, PortMapping, Protocol, RouterInfo
from ..quirks import Learned, Quirk, Then
from .base import Backend

# Preferred first: v2 has GetListOfPortMappings; PPP is what PPPoE DSL boxes offer; the
# dslforum-org names are TR-064's, which some ISP boxes (Huawei HG531) use for their IGD too.
CONNECTION_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    "urn:dslforum-org:service:WANIPConnection:1",
    "urn:dslforum-org:service:WANPPPConnection:1",
)
LIST_SAFE_ENTRIES = 96  # well under miniupnpd 2.3.1's 128, leaving room for concurrent adds
MAX_ENTRIES = 2 * 65535  # no table can hold more distinct mappings; bounds a router that loops
MAX_ADD_ATTEMPTS = 1 + len(Quirk)  # each quirk can adapt a mapping once
T = TypeVar("T")


@dataclass(frozen=True)
class _Service:
    service_type: str
    control_url: str
    scpd_url: str
    actions: frozenset[str]
    event_url: str = ""


class UpnpBackend(Backend):
    def __init__(
        self, location: str, *, timeout: float = 5.0, on_request: Callable[[str, str], None] | None = None
    ) -> None:
        self.location = location
        self.timeout = timeout
        self.on_request = on_request
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RouterUnreachable(f"{location!r} is not an http:// URL of a router description")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._local = ""
        self.learned = Learned()
        root = xmlsafe.parse(self._get(location, "device description"), f"device description at {location}")
        device, candidates = self._connection_services(root)
        self._service, external_ip = self._choose(candidates)
        self.info = RouterInfo(
            location=location,
            udn=xmlsafe.text(device, "UDN"),
            friendly_name=xmlsafe.text(device, "friendlyName"),
            igd_version=2 if xmlsafe.text(device, "deviceType").endswith(":2") else 1,
            service_type=self._service.service_type,
            external_ip=external_ip,
        )

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
        except RouterError:
            return True  # no status to go by; the external address decides
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
        import requests

        try:
            with requests.get(url, timeout=self.timeout, stream=True, proxies=_NO_PROXY) as resp:
                if resp.status_code >= 500:
                    raise HttpStatusError(f"{url} answered HTTP {resp.status_code} for the {what}", resp.status_code)
                if resp.status_code != 200:
                    raise NotAnIGD(f"{url} answered HTTP {resp.status_code} for the {what}")
                body = b""
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > xmlsafe.MAX_DOCUMENT_BYTES:
                        raise RouterProtocolError(
                            f"the {what} at {url} is larger than {xmlsafe.MAX_DOCUMENT_BYTES} bytes; refused"
                        )
                return body
        except requests.Timeout as exc:
            raise RouterUnreachable(f"router at {url} did not answer within {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise _unreachable(f"cannot reach router at {url}", exc) from exc

    # -- actions ---------------------------------------------------------------------------

    def _call(self, action: str, *, service: _Service | None = None, **args: str) -> dict[str, Any]:
        service = service or self._service
        if action not in service.actions:
            raise UpnpActionError(action, 401, "InvalidAction (not in the service description)")
        return _once_more(action, lambda: self._counted(action, lambda: self._soap(service, action, args)))

    def _soap(self, service: _Service, action: str, args: dict[str, str]) -> dict[str, Any]:
        import requests
        import upnpclient.soap as soap
        from lxml.etree import XMLSyntaxError

        soap.SOAP_TIMEOUT = self.timeout
        client = soap.SOAP(service.control_url, service.service_type)
        try:
            return client.call(action, args)  # type: ignore[no-any-return]
        except soap.SOAPError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            desc = str(exc.args[1]) if len(exc.args) > 1 else ""
            raise UpnpActionError(action, code, desc) from exc
        except requests.Timeout as exc:
            raise RouterUnreachable(f"{action}: router did not answer within {self.timeout:g}s") from exc
        except requests.HTTPError as exc:
            raise _http_error(action, exc) from exc
        except requests.RequestException as exc:
            raise _unreachable(f"{action}: cannot reach router", exc) from exc
        except (
            soap.SOAPProtocolError,
            XMLSyntaxError,
            IndexError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ) as exc:
            # upnpclient surfaces malformed answers as whichever of these its parsing hits first;
            # an error page that is well-formed XML (HTML 500) hides the HTTPError in the context.
            if isinstance(exc.__context__, requests.HTTPError):
                raise _http_error(action, exc.__context__) from exc
            raise RouterProtocolError(
                f"{action}: malformed answer from the router ({type(exc).__name__}: {exc})"
            ) from exc

    def _external_address(self, service: _Service) -> str:
        try:
            return str(self._call("GetExternalIPAddress", service=service).get("NewExternalIPAddress") or "")
        except UpnpActionError:
            return ""

    def _decide(self, action: str, exc: RouterError, mapping: PortMapping | None = None) -> quirks.Decision | None:
        request = quirks.Request(mapping, self._local_or_empty())
        return quirks.decide(action, exc, request)

    def _means(self, action: str, exc: RouterError, then: Then) -> bool:
        """Does the fallback table read this failure of a table read as `then`?"""
        decision = self._decide(action, exc)
        return decision is not None and decision.then is then

    def list_mappings(self) -> list[PortMapping]:
        listing = "GetListOfPortMappings" in self._service.actions and Quirk.NO_PORT_LISTING not in self.learned
        if listing and self._fits_one_listing():
            try:
                return [m for proto in Protocol for m in self._list_range(proto, 1, 65535)]
            except RouterError as exc:
                if not self._means("GetListOfPortMappings", exc, Then.FALL_BACK):
                    raise
                self.learned.learn(Quirk.NO_PORT_LISTING, f"GetListOfPortMappings: {exc}")
        return self._list_by_index()

    def _fits_one_listing(self) -> bool:
        try:
            self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(LIST_SAFE_ENTRIES))
        except RouterError as exc:
            if not self._means("GetGenericPortMappingEntry", exc, Then.END):
                raise
            return True
        return False

    def _list_range(self, protocol: Protocol, start: int, end: int) -> list[PortMapping]:
        try:
            out = self._call(
                "GetListOfPortMappings",
                NewStartPort=str(start),
                NewEndPort=str(end),
                NewProtocol=protocol.value,
                NewManage="1",
                NewNumberOfPorts="1000",
            )
        except UpnpActionError as exc:
            if self._means("GetListOfPortMappings", exc, Then.EMPTY):
                return []
            raise
        listing = out.get("NewPortListing") or ""
        if isinstance(listing, bytes):
            listing = listing.decode("utf-8", "replace")
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
        return [m for m in map(_mapping, rows) if m is not None]

    def _list_by_index(self) -> list[PortMapping]:
        seen: dict[MappingKey, PortMapping] = {}
        for index in range(MAX_ENTRIES):
            try:
                out = self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(index))
            except RouterError as exc:
                if self._means("GetGenericPortMappingEntry", exc, Then.END):
                    break
                raise
            mapping = _mapping({k: "" if v is None else str(v) for k, v in out.items()})
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
        return _mapping({**fields, "NewExternalPort": str(key.external_port), "NewProtocol": key.protocol.value})

    def add_mapping(self, mapping: PortMapping, *, same_port_ok: bool = False) -> PortMapping:
        want, adapted_by = mapping, list[tuple[Quirk, str]]()
        for _ in range(MAX_ADD_ATTEMPTS):
            try:
                self._add(want)
            except UpnpActionError as exc:
                request = quirks.Request(want, self._local_or_empty(), same_port_ok)
                decision = quirks.decide("AddPortMapping", exc, request)
                if decision is None:
                    raise
                evidence = f"AddPortMapping answered {exc.code} {exc.description}".strip()
                if decision.final:
                    if decision.learn:
                        self.learned.learn(decision.learn, evidence)
                    raise RouterRefused(
                        "AddPortMapping", exc.code, decision.why, stop=decision.then is Then.STOP
                    ) from exc
                quirk = decision.learn
                if decision.then is not Then.RETRY or quirk is None or quirk in (q for q, _ in adapted_by):
                    raise  # the fallback did not help: the code meant something else here
                adapted = quirks.adapt(quirk, want, request)
                if isinstance(adapted, str):
                    self.learned.learn(quirk, evidence)  # the code says it plainly; remember even so
                    raise RouterRefused("AddPortMapping", exc.code, adapted) from exc
                adapted_by.append((quirk, evidence))
                want = adapted
                continue
            # Remember only what a successful retry proved; a code that merely looked like a quirk
            # (402 for some other bad argument) taught nothing.
            for quirk, evidence in adapted_by:
                self.learned.learn(quirk, evidence)
            return want
        raise RouterProtocolError(f"AddPortMapping: the router kept refusing after {MAX_ADD_ATTEMPTS} fallbacks")

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
                self.learned.learn(decision.learn, f"DeletePortMapping answered {exc.code}")
            raise RouterRefused("DeletePortMapping", exc.code, decision.why, stop=decision.then is Then.STOP) from exc

    def _local_or_empty(self) -> str:
        try:
            return self.local_address()
        except RouterUnreachable:
            return ""

    def event_url(self) -> str:
        return self._service.event_url

    def external_address(self) -> str:
        return str(self._call("GetExternalIPAddress").get("NewExternalIPAddress") or "")

    def uptime(self) -> int | None:
        try:
            value = str(self._call("GetStatusInfo").get("NewUptime") or "")
        except UpnpActionError:
            return None
        return int(value) if value.isdigit() else None

    def local_address(self) -> str:
        if not self._local:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((self._host, self._port))  # UDP connect sends nothing; it picks the route
                except OSError as exc:
                    raise RouterUnreachable(f"no route to the router at {self._host}: {exc}") from exc
                self._local = str(s.getsockname()[0])
        return self._local


_NO_PROXY = {"http": "", "https": ""}  # a LAN router is never reached through an HTTP proxy


def _services(device: Element) -> list[Element]:
    out: list[Element] = []
    for service_list in xmlsafe.children(device, "serviceList"):
        out += xmlsafe.children(service_list, "service")
    for device_list in xmlsafe.children(device, "deviceList"):
        for sub in xmlsafe.children(device_list, "device"):
            out += _services(sub)
    return out


def _mapping(fields: dict[str, str]) -> PortMapping | None:
    """A table row, or None for a row that no declared mapping could be (unknown protocol, bad port)."""
    try:
        protocol = Protocol(fields.get("NewProtocol", "").strip().upper())
        port = int(fields.get("NewExternalPort", ""))
        internal_port = int(fields.get("NewInternalPort") or 0)
        lease = int(fields.get("NewLeaseDuration") or 0)
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    enabled = fields.get("NewEnabled", "1").strip().lower() not in ("0", "false", "no")
    return PortMapping(
        key=MappingKey(port, protocol),
        internal_client=fields.get("NewInternalClient", "").strip(),
        internal_port=internal_port,
        description=fields.get("NewPortMappingDescription", ""),
        lease=lease,
        enabled=enabled,
        remote_host=fields.get("NewRemoteHost", "").strip(),
    )


def _once_more(action: str, attempt: Callable[[], T]) -> T:
    """Run `attempt`; if the fallback table calls its failure a hiccup, run it once more."""
    try:
        return attempt()
    except RouterError as exc:
        decision = quirks.decide(action, exc, again=True)
        if decision is None or decision.then is not Then.AGAIN:
            raise
        return attempt()


def _http_error(action: str, exc: Any) -> HttpStatusError:
    """An HTTP error status that carried no UPnP fault (exc is a requests.HTTPError)."""
    status = exc.response.status_code if exc.response is not None else 0
    return HttpStatusError(f"{action} failed: HTTP {status or '?'} without a UPnP error code", status)


def _unreachable(what: str, exc: Exception) -> RouterUnreachable:
    """A connection failure: dropped after connecting (worth one retry), or never made."""
    text = str(exc)
    if any(hint in text for hint in ("Connection aborted", "RemoteDisconnected", "reset by peer", "BadStatusLine")):
        return ConnectionDropped(f"{what}: the router closed the connection without answering")
    return RouterUnreachable(f"{what}: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for hint in ("Connection refused", "No route to host", "Name or service not known", "timed out"):
        if hint in text:
            return hint.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["RouterError", "UpnpBackend"]
