"""A router's description and the choice of its connection service.

`parse_device` and `parse_actions` are pure: bytes of the description documents in, what they say
out (parsed by `xmlsafe`: no DTDs, no entities). `describe` is the caching connector: it reuses the
description an earlier run cached for this location (and configId, when SSDP gave one) after one
request proves its control URL still answers, and otherwise fetches the documents, chooses the
connection service and caches the result. It is the only code here that writes the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin
from xml.etree.ElementTree import Element

from ... import quirks, xmlsafe
from ...cache import Cache
from ...errors import ActionNotOffered, NotAnIGD, RouterError, RouterProtocolError, RouterUnreachable, UpnpActionError
from .session import Service, Session

# Preferred first: v2 has GetListOfPortMappings; PPP is what PPPoE DSL boxes offer; the
# dslforum-org names are TR-064's, which some ISP boxes (Huawei HG531) use for their IGD too.
CONNECTION_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    "urn:dslforum-org:service:WANIPConnection:1",
    "urn:dslforum-org:service:WANPPPConnection:1",
)
# IGD v2's IPv6 firewall: pinholes. Offered beside a connection service, never instead of one.
FIREWALL_SERVICE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
DESCRIPTION_TTL = 3600.0  # seconds a cached description is trusted without a configId to check


@dataclass(frozen=True)
class Offered:
    """A connection service as the device description lists it (its actions are in its SCPD)."""

    service_type: str
    control_url: str
    scpd_url: str
    event_url: str = ""


@dataclass(frozen=True)
class Device:
    """What the device description says: who the router is, which connection services it offers,
    most capable first, and its IPv6 firewall service if it offers one (which does not prove that
    pinholes work there: only an AddPinhole that succeeds does)."""

    config_id: str
    udn: str
    friendly_name: str
    igd_version: int
    offered: tuple[Offered, ...]
    firewall: Offered | None = None


@dataclass(frozen=True)
class Description:
    """What the description documents said, and which connection service was chosen."""

    location: str
    config_id: str
    udn: str
    friendly_name: str
    igd_version: int
    service: Service
    external_ip: str = ""

    @classmethod
    def cached(cls, cache: Cache, location: str, config_id: str) -> Description | None:
        record = cache.get("descriptions", location, DESCRIPTION_TTL)
        if record is None or (config_id and record.get("config_id") != config_id):
            return None
        try:
            svc = record["service"]
            service = Service(
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


def describe(session: Session, location: str, cache: Cache, *, config_id: str = "", fresh: bool = False) -> Description:
    """The router at `location` described, from `cache` when it still holds (unless `fresh`); its
    `external_ip` is the one read while connecting."""
    cached = None if fresh else Description.cached(cache, location, config_id)
    if cached is not None:
        external_ip: str | None
        try:
            external_ip = address_text(session.call(cached.service, "GetExternalIPAddress"))
        except UpnpActionError as exc:
            # 401: the control URL no longer serves that service; any other fault is its answer.
            external_ip = None if exc.code == 401 else ""
        except (RouterProtocolError, NotAnIGD, ActionNotOffered):
            external_ip = None  # the router changed under the same location: describe it again
        if external_ip is not None:
            return _with_ip(cached, external_ip)
    described = _fetch(session, location, config_id)
    described.store(cache)
    return described


def _with_ip(d: Description, external_ip: str) -> Description:
    return Description(d.location, d.config_id, d.udn, d.friendly_name, d.igd_version, d.service, external_ip)


def _fetch(session: Session, location: str, config_id: str) -> Description:
    device = parse_device(session.get(location, "device description"), location)
    candidates = []
    for offered in device.offered:
        session.check_same_host(offered.control_url)
        session.check_same_host(offered.scpd_url)
        if offered.event_url:
            session.check_same_host(offered.event_url)
        scpd_url = offered.scpd_url
        actions = parse_actions(session.get(scpd_url, "service description"), scpd_url)
        candidates.append(Service(offered.service_type, offered.control_url, scpd_url, actions, offered.event_url))
    service, external_ip = _choose(session, candidates)
    return Description(
        location=location,
        config_id=device.config_id or config_id,
        udn=device.udn,
        friendly_name=device.friendly_name,
        igd_version=device.igd_version,
        service=service,
        external_ip=external_ip,
    )


def parse_device(document: bytes, location: str) -> Device:
    """The device description at `location`: NotAnIGD unless it offers a WAN connection service."""
    root = xmlsafe.parse(document, f"device description at {location}")
    if xmlsafe.local(root.tag) != "root" or not xmlsafe.children(root, "device"):
        raise NotAnIGD(f"{location} is not a UPnP device description")
    device = xmlsafe.children(root, "device")[0]
    base = xmlsafe.text(root, "URLBase") or location
    found = [(xmlsafe.text(svc, "serviceType"), svc) for svc in _services(device)]
    offered = [_offered(base, t, svc) for service_type in CONNECTION_SERVICES for t, svc in found if t == service_type]
    firewall = next((_offered(base, t, svc) for t, svc in found if t == FIREWALL_SERVICE), None)
    if not offered:
        kind = xmlsafe.text(device, "deviceType") or "unknown device"
        raise NotAnIGD(
            f"{location} is a {kind} without a WANIPConnection or WANPPPConnection service; "
            "is it an Internet Gateway Device?"
        )
    return Device(
        config_id=root.get("configId", ""),
        udn=xmlsafe.printable(xmlsafe.text(device, "UDN")),
        friendly_name=xmlsafe.printable(xmlsafe.text(device, "friendlyName"), 100),
        igd_version=2 if xmlsafe.text(device, "deviceType").endswith(":2") else 1,
        offered=tuple(offered),
        firewall=firewall,
    )


def _offered(base: str, service_type: str, svc: Element) -> Offered:
    event = xmlsafe.text(svc, "eventSubURL")
    return Offered(
        service_type,
        urljoin(base, xmlsafe.text(svc, "controlURL")),
        urljoin(base, xmlsafe.text(svc, "SCPDURL")),
        urljoin(base, event) if event else "",
    )


def parse_actions(document: bytes, scpd_url: str) -> frozenset[str]:
    """The action names a service description (SCPD) lists."""
    scpd = xmlsafe.parse(document, f"service description at {scpd_url}")
    names = set()
    for action_list in xmlsafe.children(scpd, "actionList"):
        for action in xmlsafe.children(action_list, "action"):
            names.add(xmlsafe.text(action, "name"))
    return frozenset(names)


def _choose(session: Session, candidates: list[Service]) -> tuple[Service, str]:
    """The connection that is up with a public address, then one that is up, then the first.

    Routers with two WAN connections (MikroTik CHR, dual-WAN and PPPoE-plus-IPTV boxes) list
    dead ones too, and a mapping on a dead connection is accepted and never reachable.
    """
    if len(candidates) == 1:
        return candidates[0], _external_address(session, candidates[0])
    scored = []
    for rank, service in enumerate(candidates):
        up = _connected(session, service)
        address = _external_address(session, service) if up else ""
        public = bool(address) and not quirks.wan_blocker(address)
        if up and public:
            return service, address
        scored.append(((not up, not address, rank), service, address))
    _, service, address = min(scored, key=lambda s: s[0])
    return service, address


def _connected(session: Session, service: Service) -> bool:
    try:
        status = session.call(service, "GetStatusInfo").get("NewConnectionStatus")
    except RouterUnreachable:
        return False  # a connection that does not answer is not one to put mappings on
    except RouterError:
        return True  # a refusal (no such action): no status to go by; the external address decides
    return str(status or "").strip() in ("Connected", "Up")


def _external_address(session: Session, service: Service) -> str:
    try:
        return address_text(session.call(service, "GetExternalIPAddress"))
    except (UpnpActionError, ActionNotOffered):
        return ""


def address_text(out: dict[str, str]) -> str:
    """The WAN address in a GetExternalIPAddress answer, printable."""
    return xmlsafe.printable(out.get("NewExternalIPAddress", "").strip(), 64)


def _services(device: Element) -> list[Element]:
    out: list[Element] = []
    for service_list in xmlsafe.children(device, "serviceList"):
        out += xmlsafe.children(service_list, "service")
    for device_list in xmlsafe.children(device, "deviceList"):
        for sub in xmlsafe.children(device_list, "device"):
            out += _services(sub)
    return out
