"""IPv6 pinholes on a connected router: what is known before planning (`read`: where the firewall
service is, which address this host speaks from, what the inventory records, and why pinholes
cannot be opened there, if they cannot), and the writes of a plan's pinholes (`write`).

The service is spoken to over IPv6 from the pinhole's own address (the router insists), at the
router's description URL with its IPv6 address: the URL's own where it is IPv6, else this host's
IPv6 default gateway. A router without the service, or one answering 401, is said in the plan and
nothing is written; only an AddPinhole that succeeds proves pinholes work there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from . import discovery
from .backends.base import Backend
from .backends.upnp import firewall
from .boot import Boot
from .cache import Cache
from .errors import ActionNotOffered, PinholeNotFound, RouterError, RouterRefused
from .models import HeldPinhole, Manifest, Pinhole, PinholeAction, PinholeResult, Plan
from .pinholestore import FILE, PinholeStore

Connect = Callable[..., firewall.Firewall]


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
    location = ipv6_location(backend.info.address) if backend.info.protocol.startswith("upnp") else None
    source = source_towards(location) if location else ""
    local = tuple(dict.fromkeys([*discovery.local_ipv6(), *([source] if source else [])]))
    why = _unavailable(backend, location, source, timeout, connect)
    return PinholeFacts(store, held, location or "", source, local, why, timeout)


def _unavailable(backend: Backend, location: str | None, source: str, timeout: float | None, connect: Connect) -> str:
    if not backend.info.protocol.startswith("upnp"):
        spoken = backend.info.protocol
        return f"pinholes go through UPnP's WANIPv6FirewallControl, and this router is spoken to by {spoken}"
    if location is None:
        return (
            f"portctl knows no IPv6 address of the router ({backend.info.address} is IPv4 and this host has no "
            "global IPv6 default route): give router.url (or --router) with the router's IPv6 address"
        )
    if not source:
        return f"this host has no IPv6 route to the router at {location}"
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
    """The router's description URL with an IPv6 host: `address` itself where its host is IPv6,
    else with this host's IPv6 default gateway; None when neither is known."""
    parts = urlsplit(address)
    if parts.scheme != "http" or not parts.hostname:
        return None
    if _is_ipv6(parts.hostname):
        return address
    gateway = discovery.default_gateway6()
    if gateway is None:
        return None
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"[{gateway}]{port}", parts.path, parts.query, ""))


def source_towards(location: str) -> str:
    """The address this host's requests to `location` leave from (the kernel's route choice; nothing is sent)."""
    host = urlsplit(location).hostname or ""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(ipaddress.IPv6Address(s.getsockname()[0].split("%")[0]).compressed)
    except (OSError, ValueError):
        return ""


def write(
    plan: Plan, facts: PinholeFacts, clock: Callable[[], float], *, connect: Connect = firewall.connect
) -> tuple[PinholeResult, ...]:
    """Write the plan's pinholes exactly as planned, each from its own address, recording each one
    opened or renewed (its UniqueID and expiry) and releasing each one closed. Continues past failures."""
    out = []
    with ExitStack() as stack:
        spoken: dict[str, firewall.Firewall] = {}

        def fw(source: str) -> firewall.Firewall:
            if source not in spoken:
                spoken[source] = stack.enter_context(connect(facts.location, source=source, timeout=facts.timeout))
            return spoken[source]

        for c in plan.pinholes:
            if c.action is PinholeAction.CLOSE and facts.store.others(plan.owner, c.key):
                # Another owner holds the very same pinhole: closing it would close theirs. Only this
                # owner's record goes.
                facts.store.release(plan.owner, c.key)
                out.append(PinholeResult(c, True, unique_id=c.before.unique_id if c.before else 0))
                continue
            try:
                unique_id = _write_one(c.action, c.before, c.after, fw)
            except (RouterRefused, ActionNotOffered) as exc:
                out.append(PinholeResult(c, False, str(exc), final=True))
                continue
            except RouterError as exc:
                out.append(PinholeResult(c, False, str(exc)))
                continue
            if c.after is None:
                facts.store.release(plan.owner, c.key)
            else:
                facts.store.record(plan.owner, c.name, c.after, unique_id, clock() + c.after.lease, facts.boot)
            out.append(PinholeResult(c, True, unique_id=unique_id))
    return tuple(out)


def _write_one(
    action: PinholeAction, before: HeldPinhole | None, after: Pinhole | None, fw: Callable[[str], firewall.Firewall]
) -> int:
    # A recorded UniqueID is never sent as it is: a router that restarted numbers its pinholes from 1
    # again, and the id may now be another app's pinhole on this host. An identical AddPinhole answers
    # the id the router has for this very pinhole (extending it), so renew is that add, and close asks
    # it first with the shortest lease, then deletes what it answered.
    if action is PinholeAction.CLOSE:
        assert before is not None
        firewall_of_host = fw(before.key.internal_client)
        unique_id = firewall_of_host.add(Pinhole(before.key, 1))
        with contextlib.suppress(PinholeNotFound):  # lapsed within that second: closed already
            firewall_of_host.delete(unique_id)
        return unique_id
    assert after is not None
    return fw(after.key.internal_client).add(after)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
