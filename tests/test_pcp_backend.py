"""The PCP/NAT-PMP backend over a fake client on a virtual clock: what it keeps of what the router
granted, what it refuses, and what an epoch that says the router lost its state does to it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

import pytest

from reconciler import api, diff
from reconciler.apply import apply
from reconciler.backends.pcp import wire
from reconciler.backends.pcp.backend import LONGEST_LEASE, Mode, PcpBackend
from reconciler.backends.pcp.client import Answer
from reconciler.backends.pcp.errors import MapRefused
from reconciler.backends.pcp.nonce import mapping_nonce
from reconciler.cache import Cache
from reconciler.models import Action, DesiredMapping, Manifest, MappingKey, PortMapping, Protocol
from reconciler.ownerstore import InventoryStore, inventory_label

HOST = "192.168.77.2"
HOST_IP = ipaddress.IPv4Address(HOST)
OTHER = "192.168.77.3"  # another host on the LAN
OTHER_IP = ipaddress.IPv4Address(OTHER)
SECRET = bytes(range(32))
WEB, DNS = MappingKey(18080, Protocol.TCP), MappingKey(18053, Protocol.UDP)


class VirtualClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRouter:
    """A PCP and NAT-PMP server in memory: mappings by (protocol, internal port), each with the nonce
    that made it; ports in `held` belong to someone else, so a request for one moves to the next. A
    PCP lifetime is raised to at least `min_lifetime`, as miniupnpd does (its default); NAT-PMP ones
    to `natpmp_min_lifetime` (miniupnpd raises none; other routers grant a fixed lifetime)."""

    clock: VirtualClock
    started: float = 0.0
    ceiling: int = 86400
    min_lifetime: int = 120
    natpmp_min_lifetime: int = 0
    held: set[tuple[int, int]] = field(default_factory=set)  # (IANA protocol, external port)
    table: dict[tuple[int, int], tuple[int, bytes, int]] = field(default_factory=dict)  # -> (external, nonce, life)
    requests: list[object] = field(default_factory=list)
    third_party: int = wire.Result.UNSUPP_OPTION  # the answer to THIRD_PARTY; SUCCESS: it maps for other hosts

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def epoch(self) -> int:
        return int(self.clock() - self.started)

    def restart(self) -> None:
        self.table.clear()
        self.started = self.clock()

    def map(
        self, protocol: int, internal: int, external: int, lifetime: int, n: bytes, floor: int = 0
    ) -> tuple[int, int, int]:
        """(result, external port, lifetime) as miniupnpd answers: a held port moves to the next free one,
        and a lifetime below `floor` is raised to it."""
        held = self.table.get((protocol, internal))
        if lifetime == 0:
            if held is not None and held[1] != n:
                return wire.Result.NOT_AUTHORIZED, external, 0
            self.table.pop((protocol, internal), None)
            return wire.Result.SUCCESS, external, 0
        while (protocol, external) in self.held:
            external += 1
        life = min(max(lifetime, floor), self.ceiling)
        self.table[(protocol, internal)] = (external, n, life)
        return wire.Result.SUCCESS, external, life


@dataclass
class FakeClient:
    router: FakeRouter
    local_address: wire.IPAddress = HOST_IP
    closed: bool = False

    def pcp(self, request: wire.PcpRequest) -> Answer[wire.PcpResponse]:
        self.router.requests.append(request)
        r = self.router
        if isinstance(request, wire.AnnounceRequest):
            return Answer(wire.PcpResponse(wire.Opcode.ANNOUNCE, 0, 0, r.epoch), r.clock(), 1)
        if request.third_party is not None and r.third_party:
            result, external, life = r.third_party, request.suggested_external_port, 0
        else:
            result, external, life = r.map(
                request.protocol,
                request.internal_port,
                request.suggested_external_port,
                request.lifetime,
                request.nonce,
                r.min_lifetime,
            )
        body = wire.MapAnswer(
            request.nonce, request.protocol, request.internal_port, external, ipaddress.IPv4Address("11.22.33.1")
        )
        return Answer(wire.PcpResponse(wire.Opcode.MAP, result, life, r.epoch, body), r.clock(), 1)

    def natpmp(self, request: wire.NatPmpRequest) -> Answer[wire.NatPmpResponse]:
        self.router.requests.append(request)
        r = self.router
        if isinstance(request, wire.ExternalAddressRequest):
            response = wire.NatPmpResponse(
                wire.NatPmpOpcode.EXTERNAL_ADDRESS, 0, r.epoch, external_address=ipaddress.IPv4Address("11.22.33.1")
            )
            return Answer(response, r.clock(), 1)
        result, external, life = r.map(
            request.protocol,
            request.internal_port,
            request.suggested_external_port,
            request.lifetime,
            b"",
            r.natpmp_min_lifetime,
        )
        response = wire.NatPmpResponse(request.opcode, result, r.epoch, None, request.internal_port, external, life)
        return Answer(response, r.clock(), 1)

    def close(self) -> None:
        self.closed = True


def backend(tmp_path: str, router: FakeRouter, mode: Mode = "pcp") -> PcpBackend:
    cache = Cache(str(tmp_path), clock=router.clock)
    return PcpBackend(
        "192.168.77.1", mode=mode, cache=cache, open_client=lambda: FakeClient(router), secret=SECRET
    ).connect()


def row(key: MappingKey, internal_port: int, lease: int = 3600, name: str = "web") -> PortMapping:
    return PortMapping(key, HOST, internal_port, inventory_label("homelab", name), lease)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def router(clock: VirtualClock) -> FakeRouter:
    return FakeRouter(clock)


def test_a_grant_is_listed_until_its_lifetime_ends(tmp_path: str, clock: VirtualClock, router: FakeRouter) -> None:
    """A granted mapping is the backend's table, with the lease it has left, until it expires."""
    b = backend(tmp_path, router)
    b.add_mapping(row(WEB, 8080))
    clock.now += 600
    assert b.list_mappings() == [row(WEB, 8080, lease=3000)]
    assert b.get_mapping(WEB) == row(WEB, 8080, lease=3000)
    clock.now += 3000
    assert b.list_mappings() == []
    assert b.get_mapping(WEB) is None


def test_the_nonce_comes_from_the_owner_and_name_so_another_run_deletes_it(tmp_path: str, router: FakeRouter) -> None:
    """The MAP carries the nonce of owner, name, protocol and internal port; a new backend on the same
    cache (a later run) deletes the mapping with it, and the router's table is empty."""
    backend(tmp_path, router).add_mapping(row(WEB, 8080))
    assert router.table[(6, 8080)][1] == mapping_nonce(SECRET, "homelab", "web", "TCP", 8080)

    later = backend(tmp_path, router)
    later.delete_mapping(later.list_mappings()[0])
    assert router.table == {}
    assert later.list_mappings() == []


def test_another_port_granted_is_released_and_refused(tmp_path: str, router: FakeRouter) -> None:
    """A router that grants another external port than asked (miniupnpd with PREFER_FAILURE, when
    another mapping holds the port): the grant is deleted with the same nonce, the add raises
    MapRefused naming both ports, and nothing is recorded."""
    router.held.add((6, WEB.external_port))
    b = backend(tmp_path, router)
    with pytest.raises(MapRefused, match="granted 18081 instead of 18080/tcp"):
        b.add_mapping(row(WEB, 8080))
    assert router.table == {}
    assert b.list_mappings() == []
    last = router.requests[-1]
    assert isinstance(last, wire.MapRequest) and (last.lifetime, last.suggested_external_port) == (0, 18081)
    mapped = [r for r in router.requests if isinstance(r, wire.MapRequest) and r.lifetime]
    assert [r.prefer_failure for r in mapped] == [True]


def test_natpmp_refuses_another_port_granted_and_leaves_it(tmp_path: str, router: FakeRouter) -> None:
    """In NAT-PMP mode a moved grant is refused but never deleted: a mapping is named by the internal
    port alone, so the answer may be another application's existing mapping (RFC 6886 section 3.3)."""
    router.held.add((17, DNS.external_port))
    b = backend(tmp_path, router, "natpmp")
    with pytest.raises(MapRefused, match=r"NAT-PMP answered 18053/udp with external port 18054.*left alone"):
        b.add_mapping(row(DNS, 53, name="dns"))
    assert router.table == {(17, 53): (18054, b"", 3600)}
    assert not [r for r in router.requests if isinstance(r, wire.NatPmpMapRequest) and r.lifetime == 0]
    assert b.list_mappings() == []


def test_a_router_restart_seen_in_the_epoch_voids_every_grant(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """An answer whose epoch ran back (RFC 6887 section 8.5) voids the grants kept for the router,
    and a later run on the same cache sees them gone too."""
    b = backend(tmp_path, router)
    b.add_mapping(row(WEB, 8080))
    clock.now += 100
    b.external_address()
    assert len(b.list_mappings()) == 1  # the epoch advanced with the clock: nothing lost

    router.restart()
    clock.now += 5
    b.external_address()
    assert b.list_mappings() == []
    assert backend(tmp_path, router).list_mappings() == []


def test_a_restart_between_two_runs_is_seen_by_the_next_one(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """The epoch is kept with the grants: a router restarted while portctl was not running is noticed
    by the next run's first exchange (connect), which voids what was granted before."""
    backend(tmp_path, router).add_mapping(row(WEB, 8080))
    clock.now += 1000
    router.restart()
    clock.now += 10
    assert backend(tmp_path, router).list_mappings() == []


def test_a_shorter_lifetime_is_recorded_and_becomes_the_longest_lease(tmp_path: str, router: FakeRouter) -> None:
    """A router that grants less than asked: the grant is recorded with its lifetime, and the
    backend's longest lease (what permanent becomes, what renewals are timed against) is that one."""
    router.ceiling = 7200
    b = backend(tmp_path, router)
    assert b.capabilities.longest_lease == LONGEST_LEASE
    b.add_mapping(row(WEB, 8080, lease=86400))
    assert b.list_mappings() == [row(WEB, 8080, lease=7200)]
    assert b.capabilities.longest_lease == 7200
    assert backend(tmp_path, router).capabilities.longest_lease == 7200


def test_a_longer_lifetime_is_released_by_its_nonce_and_refused(tmp_path: str, router: FakeRouter) -> None:
    """miniupnpd raises a 60 s MAP to its min_lifetime (120 s): the grant is deleted again at once with
    the same nonce, the add is refused naming the lease to ask for, and nothing is recorded."""
    b = backend(tmp_path, router)
    with pytest.raises(MapRefused, match=r"lifetime of 120 s, longer than .* \(60 s\).*at least 120 s") as refused:
        b.add_mapping(row(WEB, 8080, lease=60))
    assert refused.value.code == 0
    assert router.table == {}
    assert b.list_mappings() == []
    maps = [r for r in router.requests if isinstance(r, wire.MapRequest)]
    n = mapping_nonce(SECRET, "homelab", "web", "TCP", 8080)
    assert [(r.nonce, r.lifetime, r.suggested_external_port) for r in maps] == [(n, 60, 18080), (n, 0, 18080)]


def test_a_renewal_granted_longer_is_released_and_its_record_goes(tmp_path: str, router: FakeRouter) -> None:
    """A mapping held for an hour, renewed with a lease shorter than the router grants: released, so
    the record of it goes too (the router holds nothing), and a later run sees nothing held."""
    b = backend(tmp_path, router)
    b.add_mapping(row(WEB, 8080))
    with pytest.raises(MapRefused, match="at least 120 s"):
        b.add_mapping(row(WEB, 8080, lease=90))
    assert router.table == {}
    assert b.list_mappings() == []
    assert backend(tmp_path, router).list_mappings() == []


def test_natpmp_refuses_a_longer_lifetime_and_leaves_it(tmp_path: str, router: FakeRouter) -> None:
    """A NAT-PMP router granting two hours for a one-minute lease: refused with the lease to ask for,
    never deleted (a NAT-PMP delete names only the internal port: it could be another app's mapping),
    and nothing recorded."""
    router.natpmp_min_lifetime = 7200
    b = backend(tmp_path, router, "natpmp")
    with pytest.raises(MapRefused, match=r"lifetime of 7200 s.*left alone.*at least 7200 s"):
        b.add_mapping(row(WEB, 8080, lease=60))
    assert router.table == {(6, 8080): (WEB.external_port, b"", 7200)}
    assert not [r for r in router.requests if isinstance(r, wire.NatPmpMapRequest) and r.lifetime == 0]
    assert b.list_mappings() == []


def test_a_one_minute_lease_fails_apply_and_the_next_plan_still_adds_it(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """Through api and apply: a `lease: 1m` mapping is one final failure naming the remedy, the router
    holds nothing, nothing is recorded, and the next plan proposes the same add (not a lease change)."""
    cache = Cache(str(tmp_path), clock=clock)
    manifest = Manifest("m.yaml", "homelab", (DesiredMapping("web", WEB, HOST, 8080, 60),))
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    report = apply(api.plan(manifest, facts), b, store=facts.store, clock=clock)
    (failed,) = report.failed
    assert failed.final and "Ask for a lease of at least 120 s" in failed.error
    assert router.table == {}
    assert InventoryStore(cache, b.info.identity).owned("homelab") == {}
    again = api.plan(manifest, api.read(b, cache))
    assert [(c.action, c.key) for c in again.changes] == [(Action.ADD, WEB)]


def test_a_delete_refused_for_another_nonce_gives_up_the_record(tmp_path: str, router: FakeRouter) -> None:
    """A mapping another client's MAP took over answers NOT_AUTHORIZED to our delete: it is refused,
    the router's mapping stays the other client's, and the backend no longer lists it as its own."""
    b = backend(tmp_path, router)
    b.add_mapping(row(WEB, 8080))
    router.table[(6, 8080)] = (WEB.external_port, b"\x01" * 12, 3600)  # taken over
    with pytest.raises(MapRefused, match="NOT_AUTHORIZED"):
        b.delete_mapping(b.list_mappings()[0])
    assert router.table[(6, 8080)][1] == b"\x01" * 12
    assert b.list_mappings() == []


def test_natpmp_refuses_a_mapping_for_another_host_before_anything_is_sent(tmp_path: str, router: FakeRouter) -> None:
    """NAT-PMP maps only for the host that asks: a mapping for another host is refused unsent, and the
    message names the remedies (portctl on that host, or PCP)."""
    b = backend(tmp_path, router, "natpmp")
    sent = len(router.requests)
    with pytest.raises(MapRefused, match=r"run portctl on 192\.168\.77\.3, or use PCP") as refused:
        b.add_mapping(replace(row(WEB, 8080), internal_client=OTHER))
    assert len(router.requests) == sent
    with pytest.raises(MapRefused, match="only to the host that asks"):
        b.delete_mapping(replace(row(WEB, 8080), internal_client=OTHER))
    assert len(router.requests) == sent
    assert refused.value.code == 0


def test_a_mapping_for_another_host_is_asked_with_third_party(tmp_path: str, router: FakeRouter) -> None:
    """On a router that maps for other hosts, map, renew and delete of a mapping for another host each
    carry THIRD_PARTY naming it, with the nonce of owner, name, protocol and internal port; this host's
    own mappings carry no such option."""
    router.third_party = wire.Result.SUCCESS
    b = backend(tmp_path, router)
    theirs = replace(row(WEB, 8080), internal_client=OTHER)
    b.add_mapping(theirs)
    b.add_mapping(theirs)  # a renewal
    b.add_mapping(row(DNS, 53, name="dns"))
    assert b.list_mappings() == [row(DNS, 53, name="dns"), theirs]
    b.delete_mapping(b.get_mapping(WEB) or theirs)

    maps = [r for r in router.requests if isinstance(r, wire.MapRequest)]
    n = mapping_nonce(SECRET, "homelab", "web", "TCP", 8080)
    assert [(r.third_party, r.nonce, r.lifetime) for r in maps if r.internal_port == 8080] == [
        (OTHER_IP, n, 3600),
        (OTHER_IP, n, 3600),
        (OTHER_IP, n, 0),
    ]
    assert [r.third_party for r in maps if r.internal_port == 53] == [None]
    assert set(router.table) == {(17, 53)}


@pytest.mark.parametrize("code", [wire.Result.UNSUPP_OPTION, wire.Result.NOT_AUTHORIZED])
def test_a_router_refusing_third_party_gives_one_refusal_with_the_remedy(
    tmp_path: str, clock: VirtualClock, router: FakeRouter, code: wire.Result
) -> None:
    """A router that does not map for other hosts (UNSUPP_OPTION, or NOT_AUTHORIZED): apply reports one
    final refusal naming the mapping, the code and the remedy; nothing is recorded, the router holds
    nothing, and the next plan still proposes the add."""
    router.third_party = code
    cache = Cache(str(tmp_path), clock=clock)
    manifest = Manifest("m.yaml", "homelab", (DesiredMapping("web", WEB, OTHER, 8080, 3600),))
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    report = apply(api.plan(manifest, facts), b, store=facts.store, clock=clock)

    (failed,) = report.failed
    assert failed.final and failed.change.name == "web"
    assert f"PCP refused to map 18080/tcp for {OTHER}: {int(code)} {code.name}" in failed.error
    assert "pcp_allow_thirdparty=yes" in failed.error and f"run portctl on {OTHER}" in failed.error
    assert router.table == {}
    assert b.list_mappings() == []
    assert InventoryStore(cache, b.info.identity).owned("homelab") == {}
    again = api.read(b, cache)
    assert [(c.action, c.key) for c in api.plan(manifest, again).changes] == [(Action.ADD, WEB)]


def test_a_third_party_delete_refused_as_not_authorized_names_another_clients_nonce(
    tmp_path: str, router: FakeRouter
) -> None:
    """A mapping for another host that another client now holds under its own nonce answers our delete
    NOT_AUTHORIZED, as a router refusing third-party requests may: the refusal names both causes."""
    router.third_party = wire.Result.SUCCESS
    b = backend(tmp_path, router)
    theirs = replace(row(WEB, 8080), internal_client=OTHER)
    b.add_mapping(theirs)
    router.table[(6, 8080)] = (WEB.external_port, b"\x01" * 12, 3600)  # another client's MAP took it over
    with pytest.raises(MapRefused, match="NOT_AUTHORIZED") as refused:
        b.delete_mapping(theirs)
    said = str(refused.value)
    assert "pcp_allow_thirdparty=yes" in said
    assert f"another client holds 18080/tcp for {OTHER} under its own nonce" in said
    assert router.table[(6, 8080)][1] == b"\x01" * 12


MANIFEST_ROWS = (
    DesiredMapping("web", WEB, HOST, 8080, 3600),
    DesiredMapping("dns", DNS, HOST, 53, 3600),
)


@pytest.mark.parametrize("mode", ["pcp", "natpmp"])
def test_plan_apply_plan_and_prune(tmp_path: str, clock: VirtualClock, router: FakeRouter, mode: Mode) -> None:
    """Through api and apply: both mappings are added and recorded, a second plan has no changes, and
    one removed from the manifest is pruned from the router."""
    cache = Cache(str(tmp_path), clock=clock)
    manifest = Manifest("m.yaml", "homelab", MANIFEST_ROWS)
    b = backend(tmp_path, router, mode)
    facts = api.read(b, cache)
    report = apply(api.plan(manifest, facts), b, store=facts.store, clock=clock)
    assert report.ok, report
    assert {(p, i) for p, i in router.table} == {(6, 8080), (17, 53)}

    clock.now += 60
    again = api.read(b, cache)
    assert api.plan(manifest, again).changes == ()

    smaller = replace(manifest, mappings=MANIFEST_ROWS[:1])
    pruned = api.plan(smaller, again)
    assert [(c.action, c.key) for c in pruned.changes] == [(Action.REMOVE, DNS)]
    assert apply(pruned, b, store=again.store, clock=clock).ok
    assert set(router.table) == {(6, 8080)}
    assert api.plan(smaller, api.read(b, cache)).changes == ()


def test_a_permanent_lease_is_refused_unless_the_longest_lifetime_is_accepted(
    tmp_path: str, router: FakeRouter
) -> None:
    """lease: permanent on a protocol with finite leases is a conflict naming the remedy, planned
    before any write; with allow_permanent the row asks for the longest lifetime, shown as adapted."""
    b = backend(tmp_path, router)
    facts = api.read(b, Cache(str(tmp_path)))
    permanent = DesiredMapping("web", WEB, HOST, 8080, 0)
    refused = api.plan(Manifest("m.yaml", "homelab", (permanent,)), facts)
    assert [c.name for c in refused.conflicts] == ["web"]
    assert "no permanent lease" in refused.conflicts[0].reason
    assert "allow_permanent" in refused.conflicts[0].reason
    assert refused.changes == ()

    accepted = api.plan(Manifest("m.yaml", "homelab", (replace(permanent, allow_permanent=True),)), facts)
    assert accepted.conflicts == ()
    (add,) = accepted.changes
    assert add.after is not None and add.after.lease == LONGEST_LEASE
    assert [(a.field, a.asked, a.written, a.allowed_by) for a in add.adapted] == [
        ("lease", 0, LONGEST_LEASE, "allow_permanent")
    ]


def test_a_lease_longer_than_the_router_grants_is_not_renewed_on_every_plan() -> None:
    """Renewal is timed against what the router can hold: a 2-day lease on a router granting at
    most one day, with 20 hours left, needs no renewal; with 10 hours left it does."""
    d = DesiredMapping("web", WEB, HOST, 8080, 2 * 86400)
    manifest = Manifest("m.yaml", "homelab", (d,))
    claims = {WEB: diff.ownership.Claim("web", False)}
    fresh = row(WEB, 8080, lease=20 * 3600)
    assert diff.diff(manifest, [fresh], claims=claims, longest_lease=86400, describes=False).changes == ()
    old = row(WEB, 8080, lease=10 * 3600)
    plan = diff.diff(manifest, [old], claims=claims, longest_lease=86400, describes=False)
    assert [c.action for c in plan.changes] == [Action.RENEW]


def test_a_stale_record_never_claims_another_owners_mapping(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """Owner media's grant lapsed and its record stayed; owner games then mapped the same port to the same
    host:port. Media's manifest no longer declaring it must not prune games' mapping: the row's label
    (games/srv) decides, not media's old record."""
    cache = Cache(str(tmp_path), clock=clock)
    media = Manifest("a.yaml", "media", (DesiredMapping("web", WEB, HOST, 8080, 600),))
    games = Manifest("b.yaml", "games", (DesiredMapping("srv", WEB, HOST, 8080, 3600),))
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    assert apply(api.plan(media, facts), b, store=facts.store, clock=clock).ok
    clock.now += 700  # media's 10-minute grant lapsed
    router.table.clear()
    facts = api.read(b, cache)
    assert apply(api.plan(games, facts), b, store=facts.store, clock=clock).ok
    theirs = dict(router.table)

    facts = api.read(b, cache)
    dropped = api.plan(replace(media, mappings=()), facts, allow_empty=True)
    assert dropped.changes == () and [m.key for m in dropped.foreign] == [WEB]
    assert apply(dropped, b, store=facts.store, clock=clock).ok
    assert router.table == theirs


def test_pruning_a_mapping_made_for_another_host_raises_no_alarm(tmp_path: str, router: FakeRouter) -> None:
    """A row this installation made for another host (THIRD_PARTY) is in its own inventory: its removal
    is not flagged as perhaps another installation's."""
    router.third_party = wire.Result.SUCCESS
    cache = Cache(str(tmp_path), clock=router.clock)
    other = (DesiredMapping("nas", MappingKey(9090, Protocol.TCP), OTHER, 9090, 3600),)
    manifest = Manifest("m.yaml", "homelab", other)
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    assert apply(api.plan(manifest, facts), b, store=facts.store, clock=router.clock).ok
    [removal] = api.plan(replace(manifest, mappings=()), api.read(b, cache)).changes
    assert removal.action is Action.REMOVE and removal.after is None
    assert removal.note == ""


def test_records_of_lapsed_grants_are_dropped_by_the_next_apply(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """A grant that lapsed leaves the router; its inventory record claims nothing, and the next apply
    that writes drops it, so the inventory holds what the router holds."""
    cache = Cache(str(tmp_path), clock=clock)
    manifest = Manifest("m.yaml", "homelab", MANIFEST_ROWS)
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    assert apply(api.plan(manifest, facts), b, store=facts.store, clock=clock).ok
    inventory = InventoryStore(cache, b.info.identity)
    assert set(inventory.owned("homelab")) == {WEB, DNS}

    clock.now += 7200  # both leases (3600 s) ran out; the manifest now declares only web
    smaller = replace(manifest, mappings=MANIFEST_ROWS[:1])
    again = api.read(b, cache)
    plan = api.plan(smaller, again)
    assert [(c.action, c.key) for c in plan.changes] == [(Action.ADD, WEB)]
    assert apply(plan, b, store=again.store, clock=clock).ok
    assert set(InventoryStore(cache, b.info.identity).owned("homelab")) == {WEB}
