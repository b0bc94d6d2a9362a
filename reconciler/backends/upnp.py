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
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from .. import xmlsafe
from ..errors import NotAnIGD, RouterError, RouterProtocolError, RouterUnreachable, UpnpActionError
from ..models import MappingKey, PortMapping, Protocol, RouterInfo
from .base import Backend

# Preferred first: v2 has GetListOfPortMappings; PPP is what PPPoE DSL boxes offer.
CONNECTION_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
LIST_SAFE_ENTRIES = 96  # well under miniupnpd 2.3.1's 128, leaving room for concurrent adds
MAX_ENTRIES = 2 * 65535  # no table can hold more distinct mappings; bounds a router that loops
END_OF_TABLE = (713, 714)  # GetGenericPortMappingEntry past the last index
GONE = 714  # DeletePortMapping of a mapping that does not exist
NOT_FOUND = 730  # GetListOfPortMappings on a range with no mappings


@dataclass(frozen=True)
class _Service:
    service_type: str
    control_url: str
    scpd_url: str
    actions: frozenset[str]


class UpnpBackend(Backend):
    def __init__(self, location: str, *, timeout: float = 5.0) -> None:
        self.location = location
        self.timeout = timeout
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RouterUnreachable(f"{location!r} is not an http:// URL of a router description")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        root = xmlsafe.parse(self._get(location, "device description"), f"device description at {location}")
        self._service, device = self._connection_service(root)
        self.info = RouterInfo(
            location=location,
            udn=xmlsafe.text(device, "UDN"),
            friendly_name=xmlsafe.text(device, "friendlyName"),
            igd_version=2 if xmlsafe.text(device, "deviceType").endswith(":2") else 1,
            service_type=self._service.service_type,
            external_ip=self.external_address(),
        )

    # -- description -----------------------------------------------------------------------

    def _connection_service(self, root: Element) -> tuple[_Service, Element]:
        if xmlsafe.local(root.tag) != "root" or not xmlsafe.children(root, "device"):
            raise NotAnIGD(f"{self.location} is not a UPnP device description")
        device = xmlsafe.children(root, "device")[0]
        base = xmlsafe.text(root, "URLBase") or self.location
        found: dict[str, Element] = {}
        for svc in _services(device):
            found.setdefault(xmlsafe.text(svc, "serviceType"), svc)
        for service_type in CONNECTION_SERVICES:
            if service_type in found:
                svc = found[service_type]
                scpd_url = urljoin(base, xmlsafe.text(svc, "SCPDURL"))
                control_url = urljoin(base, xmlsafe.text(svc, "controlURL"))
                self._check_same_host(control_url)
                self._check_same_host(scpd_url)
                return _Service(service_type, control_url, scpd_url, self._actions(scpd_url)), device
        kind = xmlsafe.text(device, "deviceType") or "unknown device"
        raise NotAnIGD(
            f"{self.location} is a {kind} without a WANIPConnection or WANPPPConnection service; "
            "is it an Internet Gateway Device?"
        )

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
        import requests

        try:
            with requests.get(url, timeout=self.timeout, stream=True, proxies=_NO_PROXY) as resp:
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
            raise RouterUnreachable(f"cannot reach router at {url}: {_reason(exc)}") from exc

    # -- actions ---------------------------------------------------------------------------

    def _call(self, action: str, **args: str) -> dict[str, Any]:
        if action not in self._service.actions:
            raise UpnpActionError(action, 401, "InvalidAction (not in the service description)")
        import requests
        import upnpclient.soap as soap
        from lxml.etree import XMLSyntaxError

        soap.SOAP_TIMEOUT = self.timeout
        client = soap.SOAP(self._service.control_url, self._service.service_type)
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
            raise RouterUnreachable(f"{action}: cannot reach router: {_reason(exc)}") from exc
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

    def external_address(self) -> str:
        try:
            return str(self._call("GetExternalIPAddress").get("NewExternalIPAddress") or "")
        except UpnpActionError:
            return ""

    def list_mappings(self) -> list[PortMapping]:
        if "GetListOfPortMappings" in self._service.actions and self._fits_one_listing():
            return [m for proto in Protocol for m in self._list_range(proto, 1, 65535)]
        return self._list_by_index()

    def _fits_one_listing(self) -> bool:
        try:
            self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(LIST_SAFE_ENTRIES))
        except UpnpActionError:
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
            if exc.code == NOT_FOUND:
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
            except UpnpActionError as exc:
                if exc.code in END_OF_TABLE:
                    break
                raise
            mapping = _mapping({k: "" if v is None else str(v) for k, v in out.items()})
            if mapping is not None:
                seen.setdefault(mapping.key, mapping)
        return list(seen.values())

    def add_mapping(self, mapping: PortMapping) -> None:
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

    def delete_mapping(self, key: MappingKey, remote_host: str = "") -> None:
        try:
            self._call(
                "DeletePortMapping",
                NewRemoteHost=remote_host,
                NewExternalPort=str(key.external_port),
                NewProtocol=key.protocol.value,
            )
        except UpnpActionError as exc:
            if exc.code != GONE:
                raise

    def local_address(self) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((self._host, self._port))  # UDP connect sends nothing; it picks the route
            except OSError as exc:
                raise RouterUnreachable(f"no route to the router at {self._host}: {exc}") from exc
            return str(s.getsockname()[0])


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


def _http_error(action: str, exc: Any) -> RouterProtocolError:
    """An HTTP error status that carried no UPnP fault (exc is a requests.HTTPError)."""
    status = exc.response.status_code if exc.response is not None else "?"
    return RouterProtocolError(f"{action} failed: HTTP {status} without a UPnP error code")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for hint in ("Connection refused", "No route to host", "Name or service not known", "timed out"):
        if hint in text:
            return hint.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["RouterError", "UpnpBackend"]
