"""A moved grant on PCP and NAT-PMP (fake client, virtual clock): PCP keeps it inside the plan's window,
refuses it outside, and the next plan finds it again as the same mapping. NAT-PMP gets no window and
keeps no moved grant: its answer may be another application's or owner's mapping of the internal port."""

from __future__ import annotations

import pytest

from reconciler import api, nextfree, render
from reconciler.apply import apply
from reconciler.backends.pcp import wire
from reconciler.backends.pcp.errors import MapRefused
from reconciler.cache import Cache
from reconciler.models import Action, DesiredMapping, Manifest, MappingKey, OnConflict, PortWindow, Protocol
from reconciler.ownerstore import InventoryStore
from tests.test_pcp_backend import HOST, WEB, FakeRouter, VirtualClock, backend, row

MOVED = MappingKey(WEB.external_port + 1, Protocol.TCP)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def router(clock: VirtualClock) -> FakeRouter:
    return FakeRouter(clock)


def maps(router: FakeRouter) -> list[object]:
    return [r for r in router.requests if isinstance(r, wire.MapRequest | wire.NatPmpMapRequest) and r.lifetime]


def test_a_grant_inside_the_window_is_kept_at_the_granted_port(tmp_path: str, router: FakeRouter) -> None:
    """The router moves the mapping one port up, inside the window: nothing is released, the grant is
    listed at the granted port under the mapping's own label, and its key is returned."""
    router.held.add((6, WEB.external_port))
    b = backend(tmp_path, router)
    window = PortWindow(WEB.external_port, WEB.external_port + 100)
    assert b.add_mapping(row(WEB, 8080), window) == MOVED
    assert router.table == {(6, 8080): (MOVED.external_port, router.table[(6, 8080)][1], 3600)}
    assert b.list_mappings() == [row(MOVED, 8080)]
    assert backend(tmp_path, router).get_mapping(MOVED) == row(MOVED, 8080)


def test_a_pcp_map_with_a_window_lets_the_router_move_it(tmp_path: str, router: FakeRouter) -> None:
    """PREFER_FAILURE asks the router to fail rather than move: with a window the plan allows the
    move, so the MAP goes without it (and without a window, with it)."""
    b = backend(tmp_path, router)
    b.add_mapping(row(WEB, 8080), PortWindow(WEB.external_port, WEB.external_port + 5))
    b.add_mapping(row(MappingKey(18090, Protocol.TCP), 8090, name="api"))
    assert [m.prefer_failure for m in maps(router) if isinstance(m, wire.MapRequest)] == [False, True]


def test_pcp_releases_and_refuses_a_grant_outside_the_window(tmp_path: str, router: FakeRouter) -> None:
    """A grant past the window's end is deleted again with the same nonce and refused, naming the window."""
    router.held |= {(6, WEB.external_port), (6, MOVED.external_port)}
    b = backend(tmp_path, router)
    window = PortWindow(WEB.external_port, MOVED.external_port)
    with pytest.raises(MapRefused, match=r"granted 18082 instead of 18080/tcp, outside the window.*18080 to 18081"):
        b.add_mapping(row(WEB, 8080), window)
    assert router.table == {}
    assert b.list_mappings() == []


def test_natpmp_refuses_a_moved_grant_even_inside_a_window_and_leaves_it(tmp_path: str, router: FakeRouter) -> None:
    """NAT-PMP handed a window anyway (a hand-made plan) refuses a grant inside it without deleting it:
    it may be another application's or owner's mapping of the internal port; nothing is recorded."""
    router.held.add((6, WEB.external_port))
    b = backend(tmp_path, router, "natpmp")
    with pytest.raises(MapRefused, match=r"external port 18081: .*left alone.*next_free needs PCP"):
        b.add_mapping(row(WEB, 8080), PortWindow(WEB.external_port, WEB.external_port + 100))
    assert router.table == {(6, 8080): (MOVED.external_port, b"", 3600)}
    assert b.list_mappings() == []
    assert backend(tmp_path, router, "natpmp").list_mappings() == []


def manifest(on_conflict: OnConflict) -> Manifest:
    return Manifest("m.yaml", "homelab", (DesiredMapping("web", WEB, HOST, 8080, 3600, on_conflict=on_conflict),))


def test_next_free_keeps_the_moved_grant_and_the_next_plan_finds_it(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """plan -> apply -> plan: the router moves web off its taken port, apply keeps the grant, reports
    it and records it at the granted port; the next plan has no changes, and a renewal renews that port."""
    router.held.add((6, WEB.external_port))
    cache = Cache(str(tmp_path), clock=clock)
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    planned = api.plan(manifest(OnConflict.NEXT_FREE), facts)
    (add,) = planned.changes
    assert (add.key, add.window) == (WEB, PortWindow(WEB.external_port, WEB.external_port + 100))
    report = apply(planned, b, store=facts.store, clock=clock)
    assert report.ok, report
    assert [r.granted for r in report.results] == [MOVED]
    assert "granted 18081 instead of 18080 (next_free)" in render.report_text(report, render.Style(False))
    assert InventoryStore(cache, b.info.identity).owned("homelab").keys() == {MOVED}

    clock.now += 60
    assert api.plan(manifest(OnConflict.NEXT_FREE), api.read(b, cache)).changes == ()

    clock.now += 3000  # past the renewal point of a one-hour lease
    again = api.read(b, cache)
    renew = api.plan(manifest(OnConflict.NEXT_FREE), again)
    assert [(c.action, c.key) for c in renew.changes] == [(Action.RENEW, MOVED)]
    assert apply(renew, b, store=again.store, clock=clock).ok
    assert router.table[(6, 8080)][0] == MOVED.external_port
    assert api.plan(manifest(OnConflict.NEXT_FREE), api.read(b, cache)).changes == ()


def test_on_conflict_fail_refuses_the_moved_grant_and_releases_it(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """The same on_conflict: fail has no window: the moved grant is released and the add refused."""
    router.held.add((6, WEB.external_port))
    cache = Cache(str(tmp_path), clock=clock)
    b = backend(tmp_path, router)
    facts = api.read(b, cache)
    planned = api.plan(manifest(OnConflict.FAIL), facts)
    assert [c.window for c in planned.changes] == [None]
    report = apply(planned, b, store=facts.store, clock=clock)
    assert not report.ok
    assert "granted 18081 instead of 18080/tcp" in report.results[0].error
    assert router.table == {}
    assert InventoryStore(cache, b.info.identity).owned("homelab") == {}


def test_natpmp_plans_next_free_without_a_window_and_says_why(
    tmp_path: str, clock: VirtualClock, router: FakeRouter
) -> None:
    """On NAT-PMP a next_free add carries no window and the plan says why; the moved grant is refused
    at apply, left alone, and neither recorded nor found as this owner's by the next plan."""
    router.held.add((6, WEB.external_port))
    cache = Cache(str(tmp_path), clock=clock)
    b = backend(tmp_path, router, "natpmp")
    assert not b.capabilities.keeps_moved_grants
    facts = api.read(b, cache)
    planned = api.plan(manifest(OnConflict.NEXT_FREE), facts)
    (add,) = planned.changes
    assert (add.key, add.window, add.note) == (WEB, None, nextfree.UNTOLD)
    report = apply(planned, b, store=facts.store, clock=clock)
    assert not report.ok and report.results[0].granted is None
    assert router.table == {(6, 8080): (MOVED.external_port, b"", 3600)}
    assert InventoryStore(cache, b.info.identity).owned("homelab") == {}
    again = api.plan(manifest(OnConflict.NEXT_FREE), api.read(b, cache))
    assert [(c.action, c.key) for c in again.changes] == [(Action.ADD, WEB)]
