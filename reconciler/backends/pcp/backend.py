"""The PCP (RFC 6887) and NAT-PMP (RFC 6886) backend: the Backend interface over `client.Client`.

Neither protocol can list or describe, so what the router granted this host is kept beside the
cache (`granted`): `list_mappings` is those grants not yet expired on the backend's clock. Ownership
is not read from the router either: `api.read` gives such a router the local inventory
(`ownerstore.InventoryStore`), whose label of each row names its owner and mapping, `OWNER/NAME ...`.

PCP: each mapping's nonce is derived from the local secret and that owner and name with the protocol
and internal port (`nonce.mapping_nonce`), so renew and delete always match, a restarted portctl
holds its mappings again, and another owner's nonce deletes nothing of ours (NOT_AUTHORIZED). Every
MAP carries PREFER_FAILURE; miniupnpd 2.3.1 still moves off a port another mapping holds, so the
granted port is compared with the requested one: one that differs is released at once and the add
is refused (MapRefused); the plan's on_conflict decides where to go instead. Where the plan gave the
mapping a window (on_conflict: next_free, nextfree.py) the MAP goes without PREFER_FAILURE, and a
grant inside the window is kept and recorded at the port granted; one outside it is released.

A mapping for another host is asked with the THIRD_PARTY option naming that host (map, renew and
delete alike, with the same nonce). Routers refuse it unless told to allow it (miniupnpd:
pcp_allow_thirdparty=yes); that refusal is one MapRefused naming the remedy.

NAT-PMP has no nonce: a mapping is the internal port of the host that asks, and a delete names that.
So a grant of another port is refused but never released: it may be another application's (or another
portctl owner's) mapping of the same internal port, returned as RFC 6886 says an existing mapping is.
For the same reason NAT-PMP keeps no moved grant, window or not (Capabilities.keeps_moved_grants is
False, so the planner gives it none): keeping one would claim that mapping, and a prune delete it.

What the router grants is compared with what was asked, because approved is what gets written. A
shorter lifetime is kept and recorded (it is the router's ceiling: renewals are timed against it). A
longer one (miniupnpd raises every PCP MAP to its min_lifetime, 120 s by default) would hold the
mapping longer than the plan said, perhaps beyond policy.max_lease, and show as a lease change in every
later plan: PCP releases it at once by its nonce and refuses it, naming the lease to ask for. NAT-PMP
refuses it too but leaves it, as a moved grant: its delete could remove another application's mapping
of that internal port; it lapses at its lifetime and nothing of it is recorded.

An answer whose epoch says the router lost its state (`epoch`) voids every grant kept for it: the
next plan finds them gone and adds them again. `uptime()` asks for the epoch afresh (ANNOUNCE, or
NAT-PMP's external address), and `epoch_rule` tells the agent's restart check and `portctl show`
that it is an epoch, judged by its RFC. Building a backend does no I/O; `connect` does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from ...cache import Cache
from ...errors import RouterUnreachable
from ...models import MappingKey, PortMapping, PortWindow, RouterInfo
from ...models import Protocol as Transport
from ...ownerstore import identity
from ...quirks import Learned
from ..base import Backend, Capabilities
from ..http import Observer
from . import epoch, nonce, wire
from .client import DEADLINE, Answer, Client, udp_socket
from .errors import MapRefused, ResultError
from .granted import Epoch, Grant, Granted
from .traced import traced

Mode = Literal["pcp", "natpmp"]
MODES: tuple[Mode, ...] = ("pcp", "natpmp")
# The longest lifetime asked for where the manifest accepts it for "permanent": one day, miniupnpd's
# ceiling for PCP (a router that grants less teaches its own ceiling, see `_granted`).
LONGEST_LEASE = 86400
RETRANSMIT_FLOOR = 21.0  # seconds: the first three PCP sends (0, 3 and 9 s) and the 12 s wait after them
R = TypeVar("R")


class Exchanger(Protocol):
    """What the backend needs of a client (client.Client; tests hand in a fake)."""

    local_address: wire.IPAddress

    def pcp(self, request: wire.PcpRequest) -> Answer[wire.PcpResponse]: ...
    def natpmp(self, request: wire.NatPmpRequest) -> Answer[wire.NatPmpResponse]: ...
    def close(self) -> None: ...


def connect(
    url: str,
    *,
    cache: Cache,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
    observe: Observer | None = None,
    natpmp_spoken: bool = True,
) -> PcpBackend:
    """The router at `pcp://HOST[:PORT]` or `natpmp://HOST[:PORT]`, connected (one exchange, two in
    PCP mode where the gateway speaks NAT-PMP too: `natpmp_spoken`). `observe` sees every datagram
    (--trace)."""
    parts = urlsplit(url)
    if parts.scheme not in MODES or not parts.hostname:
        raise RouterUnreachable(f"{url!r} is not a pcp:// or natpmp:// URL of a gateway")
    mode: Mode = "pcp" if parts.scheme == "pcp" else "natpmp"
    try:
        port = parts.port or wire.PORT
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise RouterUnreachable(f"{url!r}: the gateway is given by its IP address and port") from None
    gateway = parts.hostname
    # Never fewer than three sends: at IRT 3 s doubling, a 5 s --timeout leaves two, and a busy
    # miniupnpd holding ~200 mappings was seen to miss that (the PCP bench, load average 6). UDP
    # has no connection to fail fast on: a deadline is all a silent router costs.
    deadline = max(timeout or DEADLINE, RETRANSMIT_FLOOR)
    factory = traced(observe) if observe is not None else udp_socket
    backend = PcpBackend(
        gateway,
        mode=mode,
        cache=cache,
        clock=clock,
        open_client=lambda: Client(gateway, port=port, deadline=deadline, socket_factory=factory, clock=backend.clock),
        natpmp_spoken=natpmp_spoken,
    )
    return backend.connect()


class PcpBackend(Backend):
    """The gateway `gateway` spoken to in `mode`. `open_client` makes the client when `connect` runs;
    `clock` (the cache's wall clock by default) times lifetimes and epochs, across runs too."""

    def __init__(
        self,
        gateway: str,
        *,
        mode: Mode,
        cache: Cache,
        open_client: Callable[[], Exchanger],
        clock: Callable[[], float] | None = None,
        secret: bytes | None = None,
        natpmp_spoken: bool = True,
    ) -> None:
        self.mode = mode
        # In PCP mode the external address is asked with NAT-PMP (PCP has no such request) only where
        # the gateway speaks it: a PCP-only gateway would leave the request unanswered to the deadline.
        self.natpmp_spoken = natpmp_spoken or mode == "natpmp"
        self.gateway = gateway
        self.cache = cache
        self.clock = clock or cache.clock
        self._open_client = open_client
        self._client: Exchanger | None = None
        self._secret = secret
        self._assigned = ""  # the external address the last MAP answer assigned, this run
        self.info = RouterInfo(mode, f"{mode}:{gateway}", f"{mode}://{gateway}", service=mode)
        self.capabilities = Capabilities(
            can_list=False,
            can_describe=False,
            picks_external_port=True,
            sends_events=False,
            longest_lease=LONGEST_LEASE,
            finite_leases=True,
            keeps_moved_grants=mode == "pcp",  # only PCP's nonce tells a moved grant is this request's own
        )
        self.learned = Learned()
        self.granted = Granted(cache, self.info.identity)
        self.epoch_rule = epoch.PCP_RULE if mode == "pcp" else epoch.NATPMP_RULE

    # -- connection ------------------------------------------------------------------------------

    def connect(self) -> PcpBackend:
        """Open the client and ask once: the router's epoch, and its external address."""
        if self._client is None:
            self._client = self._open_client()
        if self.mode == "pcp" and self._secret is None:
            self._secret = nonce.load_secret(self.cache.directory or "")
        if self.mode == "pcp" and self.natpmp_spoken:
            self._pcp(wire.AnnounceRequest(self.client.local_address))
        self.info = replace(self.info, external_ip=self.external_address())
        ceiling = self.granted.ceiling()
        if ceiling:
            self.capabilities = replace(self.capabilities, longest_lease=min(LONGEST_LEASE, ceiling))
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Exchanger:
        if self._client is None:
            raise RouterUnreachable(f"not connected to {self.info.address}: connect() first")
        return self._client

    # -- the table -----------------------------------------------------------------------------

    def list_mappings(self) -> list[PortMapping]:
        """What the router granted this host and still holds, by its lifetimes: foreign rows are unseen."""
        now = self.clock()
        return [_remaining(g, now) for _, g in sorted(self.granted.grants().items()) if g.expires > now]

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        grant = self.granted.grants().get(key)
        now = self.clock()
        return _remaining(grant, now) if grant is not None and grant.expires > now else None

    def add_mapping(self, mapping: PortMapping, window: PortWindow | None = None) -> MappingKey | None:
        """Ask for exactly `mapping`: its external port (PREFER_FAILURE in PCP) and its lease. A grant
        of another port is released and refused, unless it is inside `window` (next_free, as the
        plan approved it; PCP only): then it is kept and its key returned. A shorter lifetime is what is
        recorded; a longer one is refused (PCP releases it first)."""
        if mapping.lease == 0:
            raise MapRefused(self._name, 0, f"{self._name} leases are finite: {mapping.key} asks for a permanent one")
        self._third_party(mapping)  # refused before anything is sent where it cannot be asked
        grant = self._map_pcp(mapping, window) if self.mode == "pcp" else self._map_natpmp(mapping)
        self.granted.put(grant)
        if 0 < grant.row.lease < mapping.lease:
            # The router's ceiling: what "permanent" becomes here, and what renewals are timed against.
            self.granted.shortened(grant.row.lease)
            longest = min(self.capabilities.longest_lease, grant.row.lease)
            self.capabilities = replace(self.capabilities, longest_lease=longest)
        return grant.row.key if grant.row.key != mapping.key else None

    def delete_mapping(self, mapping: PortMapping) -> None:
        held = self.granted.grants().get(mapping.key)
        if self.mode == "pcp":
            n = held.nonce if held is not None and held.nonce else self._nonce(mapping)
            try:
                self._pcp_release(mapping, n)
            except MapRefused as exc:
                if exc.code == wire.Result.NOT_AUTHORIZED and mapping.internal_client == self.local_address():
                    # Another client's nonce holds it now (a MAP from this host takes a mapping over):
                    # it is no longer ours to keep or to delete. For another host's mapping the router
                    # may instead refuse third-party requests now: the record stays until it lapses.
                    self.granted.drop(mapping.key)
                raise
        else:
            # A NAT-PMP delete names an internal port of the asking host: for a row of another host it
            # would delete this host's mapping of that port, if any. Refused before anything is sent.
            self._third_party(mapping)
            self._natpmp(wire.NatPmpMapRequest(_ip_protocol(mapping), mapping.internal_port, 0))
        self.granted.drop(mapping.key)

    def external_address(self) -> str:
        """Asked with NAT-PMP where the gateway speaks it (PCP has no such request); else the address
        the last MAP answer assigned, or an ANNOUNCE (which keeps the epoch checked) and the address
        remembered from earlier grants."""
        if self.natpmp_spoken:
            answer = self._natpmp(wire.ExternalAddressRequest())
            return str(answer.external_address or "")
        if self._assigned:
            return self._assigned
        self._pcp(wire.AnnounceRequest(self.client.local_address))
        return self.granted.external()

    def local_address(self) -> str:
        return str(self.client.local_address)

    def uptime(self) -> int | None:
        """The epoch, asked afresh (one exchange): seconds since the router's mapping state began.

        PCP asks with an ANNOUNCE; NAT-PMP with an external-address request. The answer's epoch is
        checked like any other, so a router that lost its state voids the grants kept for it here too.
        """
        if self.mode == "pcp":
            return self._pcp(wire.AnnounceRequest(self.client.local_address)).epoch
        return self._natpmp(wire.ExternalAddressRequest()).epoch

    # -- PCP -----------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return "PCP" if self.mode == "pcp" else "NAT-PMP"

    def _nonce(self, mapping: PortMapping) -> bytes:
        owner_name = identity(mapping.description)
        if owner_name is None or self._secret is None:
            raise MapRefused("PCP", 0, f"{mapping.key}: the row names no owner and mapping to derive its nonce from")
        owner, name = owner_name
        return nonce.mapping_nonce(self._secret, owner, name, mapping.key.protocol.value, mapping.internal_port)

    def _third_party(self, mapping: PortMapping) -> wire.IPAddress | None:
        """The host `mapping` is for when it is not this one (PCP's THIRD_PARTY option names it), else
        None. NAT-PMP maps only for the host that asks: there a mapping for another host is refused."""
        local = self.client.local_address
        try:
            host = ipaddress.ip_address(mapping.internal_client)
        except ValueError:
            raise MapRefused(
                self._name, 0, f"{mapping.key} is for {mapping.internal_client!r}, which is no IP address"
            ) from None
        if host == local:
            return None
        if self.mode == "natpmp":
            raise MapRefused(
                self._name,
                0,
                f"NAT-PMP maps ports only to the host that asks ({local}), and {mapping.key} is for "
                f"{mapping.internal_client}: run portctl on {mapping.internal_client}, or use PCP "
                "(router.protocols: [pcp]) where the router maps ports for other hosts",
            )
        return host

    def _map_pcp(self, mapping: PortMapping, window: PortWindow | None) -> Grant:
        n = self._nonce(mapping)
        response = self._pcp(
            wire.MapRequest(
                nonce=n,
                protocol=_ip_protocol(mapping),
                internal_port=mapping.internal_port,
                client_address=self.client.local_address,
                lifetime=mapping.lease,
                suggested_external_port=mapping.key.external_port,
                # With a window the plan lets the router move the port; without one it should fail.
                prefer_failure=window is None,
                third_party=self._third_party(mapping),
            )
        )
        assert response.map is not None  # a SUCCESS answer to MAP carries its body (wire checks)
        assigned = response.map.external_address
        if not assigned.is_unspecified and str(assigned) != self._assigned:
            self._assigned = str(assigned)
            self.granted.assigned(self._assigned)
            self.info = replace(self.info, external_ip=self._assigned)
        granted = response.map.external_port
        at = replace(mapping.key, external_port=granted)
        if granted != mapping.key.external_port and granted not in (window or ()):
            self._pcp_release(replace(mapping, key=at), n)
            raise self._moved(mapping, granted, window)
        if response.lifetime > mapping.lease:
            self._pcp_release(replace(mapping, key=at), n)
            for key in {mapping.key, at}:  # a renewal's record: the router holds it no more
                self.granted.drop(key)
            raise self._longer(mapping, response.lifetime, "released again")
        row = replace(mapping, key=at, lease=response.lifetime)
        return Grant(row, n, self.clock() + response.lifetime)

    def _pcp_release(self, mapping: PortMapping, n: bytes) -> None:
        self._pcp(
            wire.MapRequest(
                nonce=n,
                protocol=_ip_protocol(mapping),
                internal_port=mapping.internal_port,
                client_address=self.client.local_address,
                lifetime=0,
                suggested_external_port=mapping.key.external_port,
                third_party=self._third_party(mapping),
            )
        )

    def _pcp(self, request: wire.PcpRequest) -> wire.PcpResponse:
        answer = self.client.pcp(request)
        self._check_epoch("pcp", answer.response.epoch, answer.received_at)
        return self._refusal(answer.response, request)

    def _refusal(self, response: wire.PcpResponse, request: wire.PcpRequest) -> wire.PcpResponse:
        try:
            return response.raise_for_result()
        except ResultError as exc:
            if not isinstance(request, wire.MapRequest):
                raise
            what = "delete" if request.lifetime == 0 else "map"
            port = f"{request.suggested_external_port}/{wire.IpProtocol(request.protocol).name.lower()}"
            host = request.third_party
            if host is not None and exc.code in _THIRD_PARTY_REFUSED:
                # NOT_AUTHORIZED is also what a router answers a renew or delete of a mapping another
                # client holds under its own nonce: the answer cannot tell the two apart.
                held = (
                    f"; or another client holds {port} for {host} under its own nonce (then it is theirs: "
                    "declare another external port)"
                    if exc.code == wire.Result.NOT_AUTHORIZED
                    else ""
                )
                raise MapRefused(
                    "PCP",
                    exc.code,
                    f"PCP refused to {what} {port} for {host}: {exc.code} {exc.name}: the router does not "
                    "map ports for other hosts through PCP (miniupnpd: pcp_allow_thirdparty=yes); or run "
                    f"portctl on {host}{held}",
                ) from exc
            raise MapRefused(
                "PCP", exc.code, f"PCP refused to {what} {port}: {exc.code} {exc.name}{_HINTS.get(exc.code, '')}"
            ) from exc

    # -- NAT-PMP -------------------------------------------------------------------------------

    def _map_natpmp(self, mapping: PortMapping) -> Grant:
        protocol = _ip_protocol(mapping)
        response = self._natpmp(
            wire.NatPmpMapRequest(protocol, mapping.internal_port, mapping.lease, mapping.key.external_port)
        )
        granted, lifetime = response.external_port or 0, response.lifetime or 0
        # Neither a moved grant nor a longer one is released: NAT-PMP names a mapping by this host's
        # internal port alone, and a router answers a request for a port already mapped with that
        # mapping (RFC 6886 section 3.3), which may be another application's or another owner's.
        # Deleting it could delete theirs; keeping it (even inside a next_free window) would claim it.
        if granted != mapping.key.external_port:
            raise MapRefused(
                self._name,
                0,
                f"NAT-PMP answered {mapping.key} with external port {granted}: another mapping holds "
                f"{mapping.key.external_port}, or another application (or portctl owner) on this host already "
                f"maps internal port {mapping.internal_port}. It was left alone (NAT-PMP cannot tell whose it "
                f"is; it lapses in {lifetime} s unless renewed). Choose another external or internal port; "
                "next_free needs PCP (router.protocols: [pcp]), whose nonce tells a moved grant is its own",
            )
        if lifetime > mapping.lease:
            done = f"left alone (a NAT-PMP delete could remove another app's mapping); it lapses in {lifetime} s"
            raise self._longer(mapping, lifetime, done)
        row = replace(mapping, key=replace(mapping.key, external_port=granted), lease=lifetime)
        return Grant(row, b"", self.clock() + lifetime)

    def _natpmp(self, request: wire.NatPmpRequest) -> wire.NatPmpResponse:
        answer = self.client.natpmp(request)
        self._check_epoch("natpmp", answer.response.epoch, answer.received_at)
        try:
            return answer.response.raise_for_result()
        except ResultError as exc:
            raise MapRefused("NAT-PMP", exc.code, f"NAT-PMP {exc.operation} refused: {exc.code} {exc.name}") from exc

    # -- shared --------------------------------------------------------------------------------

    def _moved(self, mapping: PortMapping, granted: int, window: PortWindow | None) -> MapRefused:
        return MapRefused(
            self._name,
            0,
            f"{self._name} granted {granted} instead of {mapping.key}{_outside(window)} (another mapping "
            f"holds that port); released again. {_remedy(window)}",
        )

    def _longer(self, mapping: PortMapping, lifetime: int, done: str) -> MapRefused:
        return MapRefused(
            self._name,
            0,
            f"{self._name} granted {mapping.key} a lifetime of {lifetime} s, longer than the lease the plan "
            f"asked for ({mapping.lease} s): {done}. Ask for a lease of at least {lifetime} s",
        )

    def _check_epoch(self, protocol: str, value: int, at: float) -> None:
        """RFC 6887 section 8.5, RFC 6886 section 3.6: an epoch that ran back or fell behind the
        client's clock means the router lost its mappings, and every grant kept for it is void."""
        before = self.granted.epoch(protocol)
        lost = before is not None and (epoch.pcp_state_lost if protocol == "pcp" else epoch.natpmp_state_lost)(
            before.value, before.at, value, at
        )
        self.granted.saw(protocol, Epoch(value, at), lost=lost)


# What a refusal asks of the user, by PCP result code.
_HINTS = {
    int(wire.Result.CANNOT_PROVIDE_EXTERNAL): " (the router will not give that external port: choose another)",
    int(wire.Result.NOT_AUTHORIZED): " (the router's rules refuse it, or another client holds the mapping)",
    int(wire.Result.UNSUPP_OPTION): " (the router does not take an option portctl sent)",
}


# How a router that does not map for other hosts answers THIRD_PARTY: UNSUPP_OPTION where it does not
# know the option (miniupnpd without pcp_allow_thirdparty), NOT_AUTHORIZED where its policy refuses it
# (or where another client's nonce holds the mapping: the message names both).
_THIRD_PARTY_REFUSED = frozenset({int(wire.Result.UNSUPP_OPTION), int(wire.Result.NOT_AUTHORIZED)})


def _outside(window: PortWindow | None) -> str:
    return f", outside the window the plan approved ({window}, next_free)" if window else ""


def _remedy(window: PortWindow | None) -> str:
    if window:
        return "Free a port in the window, or declare another external port"
    return "Choose another external port, or on_conflict: next_free"


def _ip_protocol(mapping: PortMapping) -> wire.IpProtocol:
    return wire.IpProtocol.TCP if mapping.key.protocol is Transport.TCP else wire.IpProtocol.UDP


def _remaining(grant: Grant, now: float) -> PortMapping:
    """The granted row with the lease it has left (at least a second while it is held)."""
    return replace(grant.row, lease=max(1, int(grant.expires - now)))
