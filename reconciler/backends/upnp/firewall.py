"""IPv6 pinholes through UPnP WANIPv6FirewallControl:1: the router's firewall service, and a client for it.

A router opens a pinhole only to the address the request comes from (miniupnpd requires
InternalClient to equal the request's IPv6 source address, even with secure mode off), so a
`Firewall` speaks from one local address, `source`, for pinholes to that address alone; a host with
several IPv6 addresses needs one per address. `connect` describes the router from there.

The client writes exactly the pinhole it is given, or raises a typed refusal: `PinholeRefused` (606,
saying which rule the pinhole breaks), `PinholeNotFound` (no pinhole has that UniqueID),
`ActionNotOffered` (a router without the service or the action, or one that answers 401). Checking a
pinhole before it is written is `reconciler.pinholes`' job. There is no action that lists pinholes and
no description: whoever adds one keeps its UniqueID (re-adding the identical pinhole answers the same
one and extends it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ... import urls
from ...errors import ActionNotOffered, PinholeNotFound, PinholeRefused, RouterProtocolError, UpnpActionError
from ...models import PINHOLE_FIRST_PORT, Pinhole, PinholeKey, Protocol
from ..base import Opened
from ..http import Observer
from .description import FIREWALL_SERVICE, parse_actions, parse_device
from .session import OnRequest, Service, Session, Transport
from .table import number

# WANIPv6FirewallControl names protocols by their IP protocol numbers (65535 would be any).
PROTOCOL_NUMBERS = {Protocol.TCP: "6", Protocol.UDP: "17"}
NOT_FOUND = (402, 704)  # miniupnpd answers 402 InvalidArgs for an unknown UniqueID; the spec says 704


@dataclass(frozen=True)
class FirewallStatus:
    """GetFirewallStatus' answer. It does not prove pinholes work (miniupnpd says yes even where IPv6
    does not): only an AddPinhole that succeeds does."""

    enabled: bool
    inbound_pinholes_allowed: bool


def connect(
    location: str,
    *,
    source: str,
    timeout: float | None = None,
    observe: Observer | None = None,
    on_request: OnRequest | None = None,
    transport: Callable[[str, int], Transport] | None = None,
) -> Firewall:
    """The firewall service of the router described at `location` (an http:// URL the router serves
    over IPv6, at a link-local address with its zone as RFC 6874 writes it: `[fe80::1%25eth0]`), spoken
    to from this host's address `source`; ActionNotOffered if it has none."""
    parts = urlsplit(location)
    if parts.scheme != "http" or not parts.hostname:
        raise RouterProtocolError(f"{location!r} is not an http:// URL of a router description")
    session = Session(
        urls.host(location), timeout=timeout, observe=observe, on_request=on_request, connect=transport, source=source
    )
    try:
        service = firewall_service(session, location)
    except BaseException:
        session.close()
        raise
    return Firewall(session, service)


def firewall_service(session: Session, location: str) -> Service:
    """The router's firewall service, from its description at `location` and that service's SCPD."""
    device = parse_device(session.get(location, "device description"), location)
    offered = device.firewall
    if offered is None:
        why = f"its description at {location} offers no WANIPv6FirewallControl service: no IPv6 pinholes"
        raise ActionNotOffered("AddPinhole", location, why=why)
    session.check_same_host(offered.control_url)
    session.check_same_host(offered.scpd_url)
    actions = parse_actions(session.get(offered.scpd_url, "firewall service description"), offered.scpd_url)
    return Service(FIREWALL_SERVICE, offered.control_url, offered.scpd_url, actions, offered.event_url)


class Firewall:
    """Pinholes to `session.source`, the address every request leaves from. Building one sends nothing."""

    def __init__(self, session: Session, service: Service) -> None:
        self.session = session
        self.service = service

    @property
    def source(self) -> str:
        return self.session.source

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Firewall:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def status(self) -> FirewallStatus:
        out = self._call("GetFirewallStatus")
        return FirewallStatus(
            _boolean(out, "GetFirewallStatus", "FirewallEnabled"),
            _boolean(out, "GetFirewallStatus", "InboundPinholeAllowed"),
        )

    def open(self, pinhole: Pinhole) -> Opened:
        """PinholeOpener: AddPinhole, which extends an identical pinhole already open."""
        return Opened(self.add(pinhole), pinhole.lease)

    def renew(self, pinhole: Pinhole) -> Opened:
        """PinholeOpener: the identical AddPinhole again, which extends it (a recorded UniqueID is
        never trusted for UpdatePinhole: see `shut`)."""
        return self.open(pinhole)

    def shut(self, key: PinholeKey) -> None:
        """PinholeOpener: close `key` without trusting a UniqueID recorded earlier.

        A router that restarted numbers its pinholes from 1 again, and a recorded id may now be another
        app's pinhole on this host. An identical AddPinhole answers the id the router has for this very
        pinhole, so it is asked first with the shortest lease, then what it answered is deleted."""
        unique_id = self.add(Pinhole(key, 1))
        with contextlib.suppress(PinholeNotFound):  # lapsed within that second: closed already
            self.delete(unique_id)

    def add(self, pinhole: Pinhole) -> int:
        """Open `pinhole` as given; its UniqueID. An identical pinhole already open is extended to this
        lease and keeps its UniqueID."""
        key = pinhole.key
        try:
            out = self._call(
                "AddPinhole",
                RemoteHost=key.remote_host,
                RemotePort=str(key.remote_port),
                InternalClient=key.internal_client,
                InternalPort=str(key.internal_port),
                Protocol=PROTOCOL_NUMBERS[key.protocol],
                LeaseTime=str(pinhole.lease),
            )
        except UpnpActionError as exc:
            if exc.code == 606:
                raise PinholeRefused(
                    exc.code,
                    self._why_refused(pinhole),
                    internal_client=key.internal_client,
                    internal_port=key.internal_port,
                ) from exc
            raise
        return number(str(out.get("UniqueID") or "").strip(), "AddPinhole", "UniqueID")

    def update(self, unique_id: int, lease: int) -> None:
        """Give the pinhole `unique_id` a new lease of `lease` seconds from now."""
        self._on_pinhole("UpdatePinhole", unique_id, NewLeaseTime=str(lease))

    def delete(self, unique_id: int) -> None:
        """Close the pinhole `unique_id`."""
        self._on_pinhole("DeletePinhole", unique_id)

    def _on_pinhole(self, action: str, unique_id: int, **extra: str) -> None:
        try:
            self._call(action, UniqueID=str(unique_id), **extra)
        except UpnpActionError as exc:
            if exc.code in NOT_FOUND:
                raise PinholeNotFound(action, exc.code, unique_id) from exc
            raise

    def _call(self, action: str, **args: str) -> dict[str, str]:
        try:
            return self.session.call(self.service, action, **args)
        except UpnpActionError as exc:
            if exc.code == 401:  # listed in its SCPD, and still not an action it performs
                raise ActionNotOffered(
                    action, self.service.control_url, why=f"{self.service.control_url} answered 401 InvalidAction"
                ) from exc
            raise

    def _why_refused(self, pinhole: Pinhole) -> str:
        key = pinhole.key
        reasons = []
        if key.internal_client != self.source:
            reasons.append(
                f"the router opens a pinhole only to the address the request comes from, and this one came from "
                f"{self.source or 'an address the route chose'}, not {key.internal_client}: run portctl on the "
                "host that owns that address"
            )
        if key.internal_port < PINHOLE_FIRST_PORT:
            reasons.append(f"the router refuses pinholes to ports below {PINHOLE_FIRST_PORT}: use a higher port")
        if not reasons:
            reasons.append(
                "the router's own rules refuse it (miniupnpd: the internal client must be the request's source "
                "address, the port at least 1024, and its permission rules must allow it)"
            )
        return "; ".join(reasons)


def _boolean(out: dict[str, str], action: str, field: str) -> bool:
    value = str(out.get(field) or "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise RouterProtocolError(f"{action}: malformed answer from the router ({field} {value[:20]!r} is not a boolean)")


__all__ = ["Firewall", "FirewallStatus", "Transport", "connect", "firewall_service"]
