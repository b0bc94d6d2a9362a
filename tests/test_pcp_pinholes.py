"""IPv6 pinholes through PCP, against a router in memory that behaves as real miniupnpd 2.3.1 was
measured to (tests/test_real_pcp_pinholes.py proves the same on the real one): a MAP for an existing
pinhole extends it in place and forgets its nonce; a close (lifetime 0) needs the nonce it was made
with (NOT_AUTHORIZED otherwise) and answers NO_RESOURCES where nothing is held; a lifetime below its
min_lifetime is raised to it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from reconciler import markdown, pinholeaccess, pinholeplan, pinholes, plancodec, render
from reconciler.backends.pcp import wire
from reconciler.backends.pcp.client import Answer
from reconciler.backends.pcp.errors import MapRefused
from reconciler.backends.pcp.pinholes import PcpPinholes
from reconciler.cache import Cache
from reconciler.errors import PinholeHeldElsewhere, RouterTimeout
from reconciler.models import (
    ApplyReport,
    DesiredPinhole,
    HeldPinhole,
    Pinhole,
    PinholeAction,
    PinholeKey,
    Plan,
    Protocol,
)
from reconciler.pinholestore import PinholeStore

SOURCE = "2001:db8:77::2"
SECRET = bytes(range(32))
KEY = PinholeKey(SOURCE, 18900, Protocol.TCP)
MIN_LIFETIME = 120


@dataclass
class Router:
    """Pinholes by (address, port, protocol) -> [nonce or b"" once extended in place, lifetime]."""

    held: dict[tuple[str, int, int], list[object]] = field(default_factory=dict)
    sent: list[int] = field(default_factory=list)  # the lifetime of each MAP, in order

    def answer(self, r: wire.MapRequest) -> tuple[int, int]:
        self.sent.append(r.lifetime)
        where = (str(r.client_address), r.internal_port, int(r.protocol))
        found = self.held.get(where)
        if r.lifetime == 0:
            if found is None:
                return wire.Result.NO_RESOURCES, 0
            if found[0] != r.nonce:
                return wire.Result.NOT_AUTHORIZED, 0
            del self.held[where]
            return wire.Result.SUCCESS, 0
        lifetime = max(r.lifetime, MIN_LIFETIME)
        self.held[where] = [b"" if found else r.nonce, lifetime]
        return wire.Result.SUCCESS, lifetime


@dataclass
class Client:
    """The client's side of UDP: the next `lost_answers` opening MAPs reach the router, but their first
    answer is lost, so each is sent twice and the router answers both; the next `lost_requests` are
    lost on the way, so the router answers only the second send. Either way the MAP took 2 sends."""

    router: Router
    local_address: wire.IPAddress = field(default_factory=lambda: ipaddress.IPv6Address(SOURCE))
    lost_answers: int = 0
    lost_requests: int = 0

    def pcp(self, request: wire.PcpRequest) -> Answer[wire.PcpResponse]:
        assert isinstance(request, wire.MapRequest)
        sends = 1
        if request.lifetime and self.lost_answers:
            self.lost_answers -= 1
            self.router.answer(request)  # its answer never arrives
            sends = 2
        elif request.lifetime and self.lost_requests:
            self.lost_requests -= 1
            sends = 2
        result, lifetime = self.router.answer(request)
        body = wire.MapAnswer(
            request.nonce, request.protocol, request.internal_port, request.internal_port, self.local_address
        )
        return Answer(wire.PcpResponse(wire.Opcode.MAP, result, lifetime, 1, body), 0.0, sends)

    def natpmp(self, request: wire.NatPmpRequest) -> Answer[wire.NatPmpResponse]:
        raise AssertionError("pinholes never speak NAT-PMP")

    def close(self) -> None:
        pass


def opener(router: Router) -> PcpPinholes:
    return PcpPinholes(Client(router), SECRET)


def test_a_renewed_pinhole_can_still_be_closed() -> None:
    """miniupnpd forgets the nonce of a pinhole a MAP extends in place: each open and renewal closes
    this nonce's pinhole first and maps it afresh, so the close at the end is not refused."""
    router = Router()
    holes = opener(router)
    assert holes.open(Pinhole(KEY, 3600)).lease == 3600
    assert holes.renew(Pinhole(KEY, 7200)).lease == 7200
    assert router.sent == [0, 3600, 0, 7200]  # the first close found nothing (NO_RESOURCES)
    holes.shut(KEY)
    assert router.held == {}


def test_closing_a_pinhole_the_router_no_longer_holds_is_done() -> None:
    holes = opener(Router())
    holes.shut(KEY)  # NO_RESOURCES: lapsed, or the router restarted


def test_a_lifetime_longer_than_asked_is_closed_again_and_refused() -> None:
    """A 60 s lease granted 120 s would be open longer than approved."""
    router = Router()
    with pytest.raises(MapRefused, match="Ask for a lease of at least 120 s"):
        opener(router).open(Pinhole(KEY, 60))
    assert router.held == {}


THEIRS = wire.MapRequest(b"\xa5" * 12, wire.IpProtocol.TCP, 18900, ipaddress.IPv6Address(SOURCE), 600, 18900)


def test_another_clients_pinhole_is_neither_extended_nor_closed() -> None:
    """Another nonce holds the pinhole: the open's first close is refused, and that is final: no MAP
    follows (it would extend theirs in place and make the router forget their nonce). Their pinhole
    keeps its nonce and lifetime, and they can still close it."""
    router = Router()
    router.answer(THEIRS)
    holes = opener(router)
    with pytest.raises(
        PinholeHeldElsewhere, match=r"held by another client \(or extended in place before\): not opened"
    ):
        holes.open(Pinhole(KEY, 3600))
    assert router.sent == [600, 0]
    assert router.held[(SOURCE, 18900, 6)] == [THEIRS.nonce, 600]
    with pytest.raises(PinholeHeldElsewhere, match="stays open"):
        holes.shut(KEY)
    assert router.answer(replace(THEIRS, lifetime=0)) == (wire.Result.SUCCESS, 0)


def test_a_map_whose_first_answer_was_lost_stays_open_and_the_result_says_it_cannot_be_closed() -> None:
    """The opening MAP reached the router twice (its first answer was lost), so the router extended it
    in place and forgot the nonce: the check close is refused, and the pinhole is kept open as asked
    with a warning that it cannot be closed before its lease ends."""
    router = Router()
    opened = PcpPinholes(Client(router, lost_answers=1), SECRET).open(Pinhole(KEY, 3600))
    assert opened.lease == 3600
    assert "cannot be closed or renewed before its lease ends (3600 s)" in opened.warning
    assert router.sent == [0, 3600, 3600, 0]
    assert router.held[(SOURCE, 18900, 6)] == [b"", 3600]


def test_a_map_whose_first_request_was_lost_is_checked_closed_and_mapped_again() -> None:
    """A MAP that took two sends but reached the router once: the check close succeeds, the pinhole is
    mapped once more (one send) and stays closable; no warning."""
    router = Router()
    holes = PcpPinholes(Client(router, lost_requests=1), SECRET)
    opened = holes.open(Pinhole(KEY, 3600))
    assert (opened.lease, opened.warning) == (3600, "")
    assert router.sent == [0, 3600, 0, 3600]
    holes.shut(KEY)
    assert router.held == {}


def test_maps_that_each_take_two_sends_are_tried_three_times_then_refused_closed() -> None:
    """Every MAP sent twice but reaching the router once: each is closed again to keep it closable,
    three rounds at most; then the open fails (not final) and nothing is left open."""
    router = Router()
    holes = PcpPinholes(Client(router, lost_requests=5), SECRET)
    with pytest.raises(RouterTimeout, match="each of 3 MAPs was sent more than once"):
        holes.open(Pinhole(KEY, 3600))
    assert router.sent == [0, 3600, 0, 3600, 0, 3600, 0]
    assert router.held == {}


def test_write_says_when_an_opened_pinhole_cannot_be_closed(tmp_path: Path) -> None:
    """Through pinholeaccess.write: the pinhole whose MAP the router took twice is done and recorded,
    and the result (text and JSON) carries the warning."""
    router = Router()
    f = facts(tmp_path)
    opened = pinholeplan.diff([DesiredPinhole("web", KEY, 3600)], (), 0.0, prune=True)
    lossy = PcpPinholes(Client(router, lost_answers=1), SECRET)
    [result] = pinholeaccess.write(Plan("me", (), (), pinholes=opened), f, lambda: 0.0, opener=lambda _: lossy)
    assert result.ok and "cannot be closed" in result.warning
    assert [h.key for h in f.store.held("me")] == [KEY]
    report = ApplyReport(pinholes=(result,))
    assert "WARNING open as asked" in render.report_text(report, render.Style(False))
    assert render.report_json(report, now=0.0)["pinholes"][0]["warning"] == result.warning
    assert "⚠️ open as asked" in markdown.apply_markdown(Plan("me", (), (), pinholes=opened), report)


def facts(tmp_path: Path, held: tuple[HeldPinhole, ...] = ()) -> pinholeaccess.PinholeFacts:
    store = PinholeStore(Cache(str(tmp_path)), "pcp:192.168.77.1")
    return pinholeaccess.PinholeFacts(store, held, "pcp://[2001:db8:77::1]", SOURCE, (SOURCE,), through="pcp")


def test_write_records_what_was_granted_and_forgets_what_the_router_says_is_not_ours(tmp_path: Path) -> None:
    """An open is recorded; a close refused as another's releases the record (it is not ours) and
    fails for good; what the router holds stays."""
    router = Router()
    f = facts(tmp_path)
    opened = pinholeplan.diff([DesiredPinhole("web", KEY, 3600)], (), 0.0, prune=True)
    done = pinholeaccess.write(Plan("me", (), (), pinholes=opened), f, lambda: 0.0, opener=lambda _: opener(router))
    assert [r.ok for r in done] == [True]
    [held] = f.store.held("me")
    assert held.expires == 3600
    router.held[(SOURCE, 18900, 6)][0] = b"someone else"
    closing = pinholeplan.diff([], (held,), 10.0, prune=True)
    [result] = pinholeaccess.write(
        Plan("me", (), (), pinholes=closing), f, lambda: 10.0, opener=lambda _: opener(router)
    )
    assert not result.ok and result.final and "NOT_AUTHORIZED" in result.error
    assert f.store.held("me") == ()
    assert (SOURCE, 18900, 6) in router.held


def test_a_shorter_grant_is_renewed_at_half_of_it_not_on_every_plan() -> None:
    """A router granting 1 h of a 1-day lease: renewed after 30 min, not at once."""
    held = HeldPinhole("web", Pinhole(KEY, 86400), 0, 3600.0, granted=3600)
    want = [DesiredPinhole("web", KEY, 86400)]
    assert pinholeplan.diff(want, (held,), 60.0, prune=True) == ()
    [renew] = pinholeplan.diff(want, (held,), 1900.0, prune=True)
    assert renew.action is PinholeAction.RENEW


def test_a_remote_filter_is_refused_through_pcp_only() -> None:
    filtered = Pinhole(PinholeKey(SOURCE, 18900, Protocol.TCP, "2001:db8:1122::2"), 3600)
    assert any("PCP opens a pinhole to every remote host" in p for p in pinholes.problems(filtered, [SOURCE], "pcp"))
    assert pinholes.problems(filtered, [SOURCE], "upnp") == []


def test_the_service_that_opens_pinholes_is_part_of_the_saved_plan() -> None:
    plan = Plan("me", (), (), pinholes=pinholeplan.diff([DesiredPinhole("web", KEY, 3600)], (), 0.0, prune=False))
    doc = plancodec.encode(Plan(**{**plan.__dict__, "pinholes_through": "pcp"}))
    assert plancodec.decode(doc).pinholes_through == "pcp"
    doc["pinholes_through"] = "natpmp"
    with pytest.raises(plancodec.Malformed):
        plancodec.decode(doc)
