"""The stages before any write, in order: connect, read the facts, plan (apply.py does the writes).
The CLI and the agent both call these."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import diff as _diff
from . import pinholeplan, protocols, renewal, urls
from .backends.base import Backend
from .backends.http import Observer
from .cache import Cache
from .errors import DiscoveryError, RouterError
from .models import DesiredPinhole, Manifest, MappingKey, Plan, PortMapping
from .ownerstore import InventoryStore, OwnershipStore, TagStore, for_router

if TYPE_CHECKING:
    from .pinholeaccess import PinholeFacts


@dataclass(frozen=True)
class Facts:
    """What the router holds now, read once before any write, and where its owners are recorded."""

    backend: Backend
    table: list[PortMapping]
    store: OwnershipStore = field(default_factory=TagStore)
    pinholes: PinholeFacts | None = None  # None: the manifest declares none and its owner holds none


def router_url(flag: str | None, manifest: Manifest | None) -> str | None:
    """--router, then PORTCTL_ROUTER, then the manifest's router.url; None means discover."""
    return flag or os.environ.get("PORTCTL_ROUTER") or (manifest.router_url if manifest else None)


def protocol_order(flag: Sequence[str] | None, manifest: Manifest | None) -> tuple[str, ...]:
    """--protocols (or PORTCTL_PROTOCOLS, which the CLI reads as its default), then the manifest's
    router.protocols, else every protocol in the default order: UPnP, PCP, NAT-PMP."""
    return tuple(flag or (manifest.protocols if manifest else ()) or protocols.PROTOCOLS)


def connect(
    url: str | None,
    cache: Cache,
    *,
    timeout: float | None = None,
    discovery_timeout: float = 3.0,
    on_request: Callable[[str, str], None] | None = None,
    observe: Observer | None = None,
    fresh: bool = False,
    clock: Callable[[], float] | None = None,
    order: Sequence[str] = protocols.PROTOCOLS,
    probes: Callable[[str | None, Sequence[str]], Mapping[str, protocols.Probe]] | None = None,
) -> Backend:
    """A backend for the router at `url` (chosen by probing the gateway when None), knowing what it
    taught before.

    `pcp://HOST[:PORT]` and `natpmp://HOST[:PORT]` speak PCP or NAT-PMP to the gateway HOST; any
    other URL is a UPnP IGD's root description. Without a URL the default gateway is probed for the
    protocols in `order`, each for at most `discovery_timeout` seconds, and the first it speaks is
    used (`protocols`); `probes` makes the probes (discovery's real ones by default).

    Without `fresh`, what earlier runs left in `cache` is used: the router's description, and with
    no `url` what the probes found on this network, trusted before anything is sent. `observe`
    sees every exchange with the router (--trace). `clock` (the cache's by default) stamps and ages
    what the router teaches.
    """
    from .backends import upnp

    stamp = clock or cache.clock
    if url is not None:
        urls.problem(url, raise_as=DiscoveryError)
    if url is not None and url.partition("://")[0] in ("pcp", "natpmp"):
        found = _pcp_at(url, cache, timeout, stamp, observe, natpmp_spoken=_natpmp_known(url, cache))
        found.learned = cache.learned(found.info.identity, stamp())
        return found

    def backend_at(location: str, config_id: str = "", fresh: bool = fresh) -> Backend:
        return upnp.connect(
            location,
            cache=cache,
            timeout=timeout,
            on_request=on_request,
            observe=observe,
            config_id=config_id,
            fresh=fresh,
            clock=stamp,
        )

    if url is not None:
        backend = backend_at(url)
    else:

        def chosen(protocol: str, spoken: protocols.Spoken, cached: bool) -> Backend:
            if protocol == protocols.UPNP:
                found = spoken.findings[protocols.UPNP]
                return backend_at(found.location, found.config_id, fresh=fresh and not cached)
            return _pcp_at(
                f"{protocol}://{spoken.gateway}",
                cache,
                timeout,
                stamp,
                observe,
                natpmp_spoken=spoken.speaks(protocols.NATPMP) or not spoken.known(protocols.NATPMP),
            )

        backend = _discovered(cache, chosen, order, discovery_timeout, fresh, observe, probes)
    backend.learned = cache.learned(backend.info.identity, stamp())
    return backend


def _pcp_at(
    url: str,
    cache: Cache,
    timeout: float | None,
    clock: Callable[[], float],
    observe: Observer | None,
    *,
    natpmp_spoken: bool,
) -> Backend:
    from .backends.pcp import backend as pcp

    return pcp.connect(url, cache=cache, timeout=timeout, clock=clock, observe=observe, natpmp_spoken=natpmp_spoken)


def _natpmp_known(url: str, cache: Cache) -> bool:
    """Whether the gateway of a pcp:// URL is to be asked NAT-PMP: yes unless the probes on this
    network found that very gateway silent in NAT-PMP."""
    from . import discovery

    spoken = protocols.Spoken.from_json(cache.get("networks", discovery.network_key()))
    if spoken is None or spoken.gateway != urlsplit(url).hostname:
        return True
    return spoken.speaks(protocols.NATPMP) or not spoken.known(protocols.NATPMP)


def _discovered(
    cache: Cache,
    chosen: Callable[[str, protocols.Spoken, bool], Backend],
    order: Sequence[str],
    deadline: float,
    fresh: bool,
    observe: Observer | None,
    make_probes: Callable[[str | None, Sequence[str]], Mapping[str, protocols.Probe]] | None,
) -> Backend:
    from . import discovery

    network = discovery.network_key()
    remembered = None if fresh else protocols.Spoken.from_json(cache.get("networks", network))
    choice = remembered.choice(order) if remembered is not None else None
    if remembered is not None and choice is not None:
        try:
            return chosen(choice, remembered, True)
        except RouterError:
            cache.put("networks", network, None)  # gone or moved: ask the network again
    gateway = discovery.default_gateway()
    if make_probes is None:
        spoken = protocols.probe(
            gateway or "", discovery.probes(gateway, order, observe=observe), deadline, order=order
        )
    else:
        spoken = protocols.probe(gateway or "", make_probes(gateway, order), deadline, order=order)
    choice = spoken.choice(order)
    if choice is None:
        said = "; ".join(f"{protocols.NAMES[p]}: {f.detail}" for p, f in spoken.findings.items())
        where = f"the gateway {gateway}" if gateway else "this network (no default gateway)"
        raise DiscoveryError(
            f"{where} answered none of {', '.join(protocols.NAMES[p] for p in order)} within {deadline:g}s"
            f"{' (' + said + ')' if said else ''}; give the router with --router URL or PORTCTL_ROUTER"
        )
    backend = chosen(choice, spoken, False)
    cache.put("networks", network, {**spoken.to_json(), "location": backend.info.address, "protocol": choice})
    return backend


def remembered_protocols(cache: Cache, backend: Backend) -> protocols.Spoken | None:
    """What the probes on this network found, if they chose `backend`'s router (show says it)."""
    from . import discovery

    record = cache.get("networks", discovery.network_key())
    if record is None or record.get("location") != backend.info.address:
        return None
    return protocols.Spoken.from_json(record)


@contextlib.contextmanager
def session(
    url: str | None,
    cache: Cache,
    *,
    timeout: float | None = None,
    observe: Observer | None = None,
    order: Sequence[str] = protocols.PROTOCOLS,
) -> Iterator[Backend]:
    """A connected backend; what the router taught is remembered in `cache` however the block ends."""
    backend = connect(url, cache, timeout=timeout, observe=observe, order=order)
    try:
        yield backend
    finally:
        remember(backend, cache)


def remember(backend: Backend, cache: Cache) -> None:
    """Keep what the router taught this run (its quirks) for the next one."""
    if backend.learned.changed:
        cache.remember(backend.info.identity, backend.learned, backend.info.description)


def relearn(backend: Backend, cache: Cache, now: float) -> None:
    """Keep what `backend` learned, then take up the cache's lessons as they stand now: what a
    `portctl forget` dropped meanwhile is forgotten here too, and what another run learned is known
    (a long-lived connection, the agent's, calls this before each pass)."""
    remember(backend, cache)
    backend.learned = cache.learned(backend.info.identity, now)


def read(
    backend: Backend,
    cache: Cache | None = None,
    manifest: Manifest | None = None,
    *,
    timeout: float | None = None,
    clock: Callable[[], float] = time.time,
) -> Facts:
    """The table, and the ownership store that says which of its rows are whose (`owners`); with a
    `manifest`, the IPv6 pinholes its owner declares or holds (each request waits `timeout`) and the
    router's boot on `clock` (the wall clock the inventory's expiries are on)."""
    table = backend.list_mappings()
    store = owners(backend, cache)
    held = None
    if manifest is not None and cache is not None:
        held = read_pinholes(manifest, backend, cache, timeout=timeout, clock=clock)
    return Facts(backend, table, store, held)


def read_pinholes(
    manifest: Manifest, backend: Backend, cache: Cache, *, timeout: float | None, clock: Callable[[], float]
) -> PinholeFacts | None:
    """The pinhole facts of `manifest`'s owner and the router's boot; None where it declares none and
    nothing is recorded (a warm plan of mappings alone pays nothing for pinholes: not even the imports)."""
    if not (manifest.pinholes or _pinholes_recorded(cache)):
        return None
    from . import bootread, pinholeaccess

    held = pinholeaccess.read(manifest, backend, cache, timeout=timeout)
    if held is not None:
        # The router lists no pinholes: its boot is how a plan knows a restart took them all.
        held = replace(held, boot=bootread.read(backend, clock).boot)
    return held


def _pinholes_recorded(cache: Cache) -> bool:
    from .pinholestore import FILE

    return cache.directory is not None and os.path.exists(os.path.join(cache.directory, FILE))


def owners(backend: Backend, cache: Cache | None) -> OwnershipStore:
    """Where this router's owners are recorded: in its descriptions when it keeps them (UPnP IGD),
    else in a local inventory in `cache` (a protocol that cannot describe needs one: without a
    cache directory that is an error, never a silent "nothing is ours")."""
    from .backends.pcp.nonce import Recogniser

    cache = cache or Cache(None)
    # miniupnpd lists mappings made through PCP in its UPnP table: this host's own are told by their nonce.
    made = Recogniser(cache.directory)
    return for_router(backend.capabilities.can_describe, cache, backend.info.identity, made)


def recorded(backend: Backend, cache: Cache) -> Callable[[PortMapping], tuple[str, ...]]:
    """Who the local inventory says holds a row of `backend`'s router, every owner's records read: a
    row owned through it carries no tag. Nobody where there is no cache directory (so no inventory)."""
    if cache.directory is None or not backend.info.identity:
        return lambda row: ()
    return InventoryStore(cache, backend.info.identity).holders


def resolve(manifest: Manifest, backend: Backend) -> Manifest:
    """`internal_client: auto` becomes this host's address on the interface towards the router."""
    if not any(m.internal_client == "auto" for m in manifest.mappings):
        return manifest
    local = backend.local_address()
    mappings = tuple(replace(m, internal_client=local) if m.internal_client == "auto" else m for m in manifest.mappings)
    return replace(manifest, mappings=mappings)


def plan(
    manifest: Manifest,
    facts: Facts,
    *,
    renew_below: float = renewal.PLAN_BELOW,
    max_deletions: int | None = None,
    allow_empty: bool = False,
    store: OwnershipStore | None = None,
    clock: Callable[[], float] = time.time,
    applied: Mapping[MappingKey, PortMapping] | None = None,
    withhold_drift: bool = False,
) -> Plan:
    """The plan for `manifest`, through the admission gate: blocked (nothing may be applied) where it
    breaks the manifest's policy, sensitive ports or protection on the rows as they will be written, or
    the deletion guards: more than `max_deletions`, or an empty manifest pruning all. `store` says
    which rows are ours; by default the one `read` chose for this router (`owners`). `clock` says
    which held pinholes are due for renewal. `applied` (the rows last seen converged) tells drift from
    edits of the manifest, and `withhold_drift` leaves drift of warn and ignore mappings unwritten
    (diff.diff says how): the agent's plans."""
    backend = facts.backend
    store = store or facts.store
    local = backend.local_or_unknown()
    resolved = resolve(manifest, backend)
    can = backend.capabilities
    planned = _diff.diff(
        resolved,
        facts.table,
        backend.info,
        backend.learned,
        local,
        renew_below,
        store=store,
        longest_lease=can.longest_lease,
        describes=can.can_describe,
        finite_leases=can.finite_leases,
        picks_port=can.picks_external_port,
        keeps_moved=can.keeps_moved_grants,
        applied=applied,
        withhold=withhold_drift,
    )
    held = facts.pinholes
    if held is not None:
        desired = desired_pinholes(manifest, held)
        changes = pinholeplan.diff(
            desired, held.held, clock(), prune=manifest.prune, boot=held.boot, renew_below=renew_below
        )
        why = held.unavailable
        planned = replace(planned, pinholes=changes, pinholes_unavailable=why, pinholes_through=held.through)
    return _admitted(planned, resolved, facts, max_deletions=max_deletions, allow_empty=allow_empty)


def desired_pinholes(manifest: Manifest, held: PinholeFacts) -> list[DesiredPinhole]:
    """The manifest's pinholes with `internal_client: auto` as this host's address towards the router."""
    auto = held.source or "auto"  # no address towards the router: admission refuses "auto"
    return [
        replace(d, key=replace(d.key, internal_client=auto)) if d.key.internal_client == "auto" else d
        for d in manifest.pinholes
    ]


def destroy_plan(manifest: Manifest, facts: Facts, store: OwnershipStore | None = None) -> Plan:
    """The plan removing every mapping and closing every pinhole this owner holds, through the
    admission gate (protection)."""
    backend = facts.backend
    planned = _diff.destroy(manifest, facts.table, backend.info, backend.local_or_unknown(), store or facts.store)
    if facts.pinholes is not None:
        closes = tuple(pinholeplan.close(h, "destroy") for h in facts.pinholes.held)
        planned = replace(planned, pinholes=closes, pinholes_through=facts.pinholes.through)
    return _admitted(planned, replace(manifest, mappings=(), pinholes=()), facts, allow_empty=True)


def _admitted(
    plan: Plan, manifest: Manifest, facts: Facts, *, max_deletions: int | None = None, allow_empty: bool = False
) -> Plan:
    from . import admission

    local = facts.pinholes.local if facts.pinholes else ()
    refusals = admission.admit(plan, manifest, max_deletions=max_deletions, allow_empty=allow_empty, local_ipv6=local)
    return replace(plan, refusals=tuple(refusals), blocked=admission.blocking(refusals))
