"""IPv6 pinholes on a connected router: what is known before planning (`read`: which service opens
them, which address this host speaks from, what the inventory records, and why pinholes cannot be
opened there, if they cannot), and the writes of a plan's pinholes (`write`).

Two services open them: UPnP's WANIPv6FirewallControl where the router is spoken to by UPnP, and
PCP (a MAP for this host's IPv6 address) where it is spoken to by PCP. NAT-PMP has no IPv6. Either
is spoken to over IPv6 from the pinhole's own address (routers insist), at the router's IPv6
address: the router URL's own where it is IPv6, else this host's IPv6 default gateway, which may be
link-local (router advertisements make it so): then requests go to it with its zone, from this
host's global address on that link. A router
without the UPnP service, or one answering 401, is said in the plan and nothing is written; only a
pinhole that opens proves pinholes work there.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from . import discovery, urls
from .backends.base import Backend, Opened, PinholeOpener
from .backends.upnp import firewall
from .boot import Boot
from .cache import Cache
from .errors import ActionNotOffered, PinholeHeldElsewhere, RouterError, RouterRefused
from .models import HeldPinhole, Manifest, PinholeAction, PinholeChange, PinholeResult, Plan
from .pinholestore import FILE, PinholeStore

Connect = Callable[..., firewall.Firewall]  # UPnP's: how the firewall service is reached (tests hand in one)
Open = Callable[[str], PinholeOpener]  # an opener speaking from this host's address


def _through(backend: Backend) -> str:
    """Which service opens pinholes on this router: "upnp", "pcp", or "" (none: NAT-PMP)."""
    protocol = backend.info.protocol
    return "upnp" if protocol.startswith("upnp") else "pcp" if protocol == "pcp" else ""


@dataclass(frozen=True)
class PinholeFacts:
    """What the plan and apply need of the router's pinholes, read once before any write."""

    store: PinholeStore
    held: tuple[HeldPinhole, ...]  # what this owner's inventory records on this router
    location: str  # the router's description at its IPv6 address ("" if none is known)
    source: str  # this host's IPv6 address towards the router: what `auto` means ("" if none)
    local: tuple[str, ...]  # this host's addresses a pinhole may lead to
    unavailable: str = ""  # why no pinhole can be opened on this router ("" if they may be)
    timeout: float | None = None
    through: str = "upnp"  # the service that opens them: "upnp" (location is its description) or "pcp"
    boot: Boot | None = None  # the router's boot as read with these facts, recorded with each pinhole written


def read(
    manifest: Manifest,
    backend: Backend,
    cache: Cache,
    *,
    timeout: float | None = None,
    connect: Connect = firewall.connect,
) -> PinholeFacts | None:
    """The pinhole facts for `manifest`'s owner, or None where it declares none and holds none."""
    if not manifest.pinholes and not _inventory_exists(cache):
        return None
    store = PinholeStore(cache, backend.info.identity)
    held = store.held(manifest.owner)
    if not manifest.pinholes and not held:
        return None
    through = _through(backend)
    location = ipv6_location(backend.info.address) if through else None
    source = source_towards(location) if location else ""
    local = tuple(dict.fromkeys([*discovery.local_ipv6(), *([source] if source else [])]))
    why = _unavailable(backend, through, location, source, timeout, connect)
    return PinholeFacts(store, held, location or "", source, local, why, timeout, through or "upnp")


def _unavailable(
    backend: Backend, through: str, location: str | None, source: str, timeout: float | None, connect: Connect
) -> str:
    if not through:
        spoken = backend.info.protocol
        return (
            f"pinholes go through UPnP's WANIPv6FirewallControl or PCP, and this router is spoken to by {spoken}, "
            "which has no IPv6: set router.protocols to put upnp or pcp first"
        )
    if location is None:
        return (
            f"portctl knows no IPv6 address of the router ({backend.info.address} is IPv4 and this host has no "
            "IPv6 default route): give router.url (or --router) with the router's IPv6 address"
        )
    if not source:
        return f"this host has no global IPv6 address to reach the router at {location} from"
    if through == "pcp":
        return ""  # no probe: a silent gateway would cost the whole deadline, and only a MAP proves it
    try:
        with connect(location, source=source, timeout=timeout) as fw:
            fw.status()  # proves nothing when it answers; a 401 proves the actions are not there
    except ActionNotOffered as exc:
        return str(exc)
    except RouterError as exc:
        return f"its firewall service did not answer over IPv6 ({exc})"
    return ""


def _inventory_exists(cache: Cache) -> bool:
    return cache.directory is not None and os.path.exists(os.path.join(cache.directory, FILE))


def ipv6_location(address: str) -> str | None:
    """The router's description URL (or its pcp:// URL) with an IPv6 host: `address` itself where its
    host is IPv6, else with this host's IPv6 default gateway (a link-local one with its zone, as RFC
    6874 writes it: `http://[fe80::1%25eth0]:5000/rootDesc.xml`); None when neither is known."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "pcp") or not parts.hostname:
        return None
    if _is_ipv6(parts.hostname):
        return address
    gateway = discovery.default_gateway6()
    if gateway is None:
        return None
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{urls.bracketed(gateway)}{port}", parts.path, parts.query, ""))


def source_towards(location: str) -> str:
    """The address this host's requests to `location` leave from ("" if none): a global one always,
    since a router opens a pinhole for the request's source alone.

    Towards a global address that is the kernel's route choice (nothing is sent). Towards a
    link-local one (`fe80::1%eth0`) the kernel would choose this host's link-local address, so it is
    this host's first global address on that link's device, a stable one before a temporary one
    (`discovery.local_ipv6`); requests are bound to it, and a global source may speak to a
    link-local destination on its own link."""
    host = urls.host(location)
    address, _, zone = host.partition("%")
    if zone and _is_ipv6(address) and ipaddress.IPv6Address(address).is_link_local:
        on_link = discovery.local_ipv6(device=zone)
        return on_link[0] if on_link else ""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(ipaddress.IPv6Address(s.getsockname()[0].split("%")[0]).compressed)
    except (OSError, ValueError):
        return ""


def write(
    plan: Plan,
    facts: PinholeFacts,
    clock: Callable[[], float],
    *,
    connect: Connect = firewall.connect,
    opener: Open | None = None,
) -> tuple[PinholeResult, ...]:
    """Write the plan's pinholes exactly as planned, each from its own address, recording each one
    opened or renewed (its UniqueID and expiry) and releasing each one closed. Continues past failures.
    `opener` makes the opener for an address (by default the service `facts` name: UPnP through
    `connect`, or PCP)."""
    out = []
    make = opener or _opener(facts, connect)
    with ExitStack() as stack:
        spoken: dict[str, PinholeOpener] = {}

        def at(source: str) -> PinholeOpener:
            if source not in spoken:
                spoken[source] = make(source)
                stack.callback(spoken[source].close)
            return spoken[source]

        for c in plan.pinholes:
            if c.action is PinholeAction.CLOSE and facts.store.others(plan.owner, c.key):
                # Another owner holds the very same pinhole: closing it would close theirs. Only this
                # owner's record goes.
                facts.store.release(plan.owner, c.key)
                out.append(PinholeResult(c, True, unique_id=c.before.unique_id if c.before else 0))
                continue
            try:
                opened = _write_one(c, at)
            except RouterError as exc:
                # Not ours any more (the router said so); or a PCP renewal, which closes the pinhole before
                # it maps it again, failed half-way: the next plan opens it rather than trust the record.
                renewing = c.action is PinholeAction.RENEW and facts.through == "pcp"
                if renewing or isinstance(exc, PinholeHeldElsewhere):
                    facts.store.release(plan.owner, c.key)
                final = isinstance(exc, (RouterRefused, ActionNotOffered))
                out.append(PinholeResult(c, False, str(exc), final=final))
                continue
            if c.after is None or opened is None:
                facts.store.release(plan.owner, c.key)
                out.append(PinholeResult(c, True, unique_id=c.before.unique_id if c.before else 0))
            else:
                granted, boot = opened.lease, facts.boot
                facts.store.record(
                    plan.owner, c.name, c.after, opened.unique_id, clock() + opened.lease, boot, granted=granted
                )
                out.append(PinholeResult(c, True, unique_id=opened.unique_id, warning=opened.warning))
    return tuple(out)


def _opener(facts: PinholeFacts, connect: Connect) -> Open:
    if facts.through == "pcp":
        from .backends.pcp import pinholes as pcp_pinholes

        directory = facts.store.cache.directory or ""
        return lambda source: pcp_pinholes.connect(
            facts.location, source=source, secret_directory=directory, timeout=facts.timeout
        )
    return lambda source: connect(facts.location, source=source, timeout=facts.timeout)


def _write_one(c: PinholeChange, at: Callable[[str], PinholeOpener]) -> Opened | None:
    """Open or renew (the same request: it extends what is open) `c.after`, or close `c.before`."""
    if c.action is PinholeAction.CLOSE:
        assert c.before is not None
        at(c.before.key.internal_client).shut(c.before.key)
        return None
    assert c.after is not None
    opener = at(c.after.key.internal_client)
    return opener.renew(c.after) if c.action is PinholeAction.RENEW else opener.open(c.after)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
