"""portctl's PCP and NAT-PMP backend against the emulator's UDP port, on loopback: the emulator
answers as miniupnpd 2.3.1 does, on the same table its UPnP side lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import api
from reconciler.apply import apply
from reconciler.backends.pcp import wire
from reconciler.backends.pcp.client import Client
from reconciler.backends.pcp.errors import UnsupportedVersion
from reconciler.backends.pcp.nonce import load_secret, mapping_nonce, miniupnpd_description, natpmp_description
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.manifest import load
from tests.helpers import portctl, snapshot, write

LOOPBACK = "127.0.0.1"
MANIFEST = """\
apiVersion: portctl/v1
owner: homelab
defaults: {{lease: 10m, internal_client: auto}}
prune: true
mappings:
{rows}"""
ROWS = {
    "web": "  - {name: web, external_port: 18080, internal_port: 8080, protocol: tcp}\n",
    "game": "  - {name: game, external_port: 27015, internal_port: 7015, protocol: udp}\n",
}
# Other clients' mappings: a UPnP row of another host, a NAT-PMP row and a PCP row of this one.
OTHER_NONCE = bytes.fromhex("00112233445566778899aabb")


class SteppedClock:
    """The monotonic clock plus whatever the test jumped over: time passes as it does, and a test
    moves it by minutes at once without waiting."""

    def __init__(self) -> None:
        self.jumped = 0.0

    def __call__(self) -> float:
        import time

        return time.monotonic() + self.jumped


def manifest(tmp_path: Path, *names: str) -> str:
    return write(tmp_path, MANIFEST.format(rows="".join(ROWS[n] for n in names)), f"{'-'.join(names)}.yaml")


def serve(profile: str = "spec", clock: SteppedClock | None = None) -> EmulatorServer:
    router = Router(PROFILES[profile], clock=clock) if clock else Router(PROFILES[profile])
    return EmulatorServer(router, pcp_port=0).start()


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    s = serve()
    yield s
    s.stop()


def client(server: EmulatorServer) -> Client:
    return Client(LOOPBACK, port=server.pcp_port, deadline=30)


def foreign_rows(server: EmulatorServer) -> list[tuple[object, ...]]:
    """Another host's UPnP mapping, and a NAT-PMP and a PCP mapping another app on this host made."""
    server.router.add(9999, "TCP", "192.168.1.77", 9999, "someone else's game server")
    with client(server) as c:
        assert c.natpmp(wire.NatPmpMapRequest(wire.IpProtocol.TCP, 6881, 3600, 16881)).response.ok
        other = wire.MapRequest(OTHER_NONCE, wire.IpProtocol.UDP, 4500, c.local_address, 3600, 14500)
        assert c.pcp(other).response.ok
    return sorted(snapshot(server))


@pytest.mark.parametrize("scheme", ["pcp", "natpmp"])
def test_plan_apply_plan_and_prune_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: EmulatorServer, scheme: str
) -> None:
    """apply maps both rows through the protocol, a second plan has no changes, and a row dropped
    from the manifest is pruned from the router; the other clients' rows stay byte-identical."""
    foreign = foreign_rows(server)
    router = ["--router", server.pcp_url(scheme), "--no-color"]

    applied = portctl(capsys, "apply", manifest(tmp_path, "web", "game"), *router, "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    mine = {(e.external_port, e.protocol, e.internal_port) for e in server.router.rows()}
    assert {(18080, "TCP", 8080), (27015, "UDP", 7015)} <= mine
    again = portctl(capsys, "plan", manifest(tmp_path, "web", "game"), *router, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err

    pruned = portctl(capsys, "apply", manifest(tmp_path, "web"), *router, "--auto-approve")
    assert pruned.code == 0, pruned.out + pruned.err
    rows = sorted(snapshot(server))
    assert [r for r in rows if r not in foreign] == [r for r in rows if r[0] == 18080]
    assert [r[:4] for r in rows if r not in foreign] == [(18080, "TCP", LOOPBACK, 8080)]
    assert [r for r in rows if r in foreign] == foreign


def test_the_upnp_listing_shows_pcp_and_natpmp_rows_as_miniupnpd_describes_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, router_cache: str, server: EmulatorServer
) -> None:
    """A mapping made through pcp:// is listed by the UPnP side as `PCP MAP` and its nonce (three
    32-bit words, little-endian), one made through natpmp:// as `NAT-PMP <port> <proto>`."""
    path = manifest(tmp_path, "web")
    assert portctl(capsys, "apply", path, "--router", server.pcp_url(), "--auto-approve").code == 0
    gamepath = manifest(tmp_path, "game")
    assert portctl(capsys, "apply", gamepath, "--router", server.pcp_url("natpmp"), "--auto-approve").code == 0

    upnp = api.connect(server.url, Cache(router_cache))
    listed = {(m.key.external_port, m.key.protocol.value): m.description for m in upnp.list_mappings()}
    nonce = mapping_nonce(load_secret(router_cache), "homelab", "web", "TCP", 8080)
    assert listed == {
        (18080, "TCP"): miniupnpd_description(nonce, "little"),
        (27015, "UDP"): natpmp_description(27015, "UDP"),
    }


def test_the_natpmp_only_profile_maps_through_natpmp_and_refuses_pcp_in_version_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """natpmp-only answers a PCP request with NAT-PMP's version-0 UNSUPP_VERSION, and portctl's
    plan/apply/plan through natpmp:// converges on it."""
    server = serve("natpmp-only")
    try:
        with client(server) as c, pytest.raises(UnsupportedVersion) as refused:
            c.pcp(wire.AnnounceRequest(c.local_address))
        assert refused.value.server_version == 0
        router = ["--router", server.pcp_url("natpmp")]
        path = manifest(tmp_path, "web", "game")
        applied = portctl(capsys, "apply", path, *router, "--auto-approve")
        assert applied.code == 0, applied.out + applied.err
        assert sorted(snapshot(server)) == [
            (18080, "TCP", LOOPBACK, 8080, "NAT-PMP 18080 tcp"),
            (27015, "UDP", LOOPBACK, 7015, "NAT-PMP 27015 udp"),
        ]
        again = portctl(capsys, "plan", path, *router, "--detailed-exitcode")
        assert again.code == 0, again.out + again.err
    finally:
        server.stop()


def test_the_unsupp_version_profile_answers_pcp_with_version_1_and_natpmp_works() -> None:
    """pcp-unsupp-version answers PCP version 2 with UNSUPP_VERSION naming version 1; its NAT-PMP
    side gives the external address."""
    server = serve("pcp-unsupp-version")
    try:
        with client(server) as c:
            with pytest.raises(UnsupportedVersion) as refused:
                c.pcp(wire.AnnounceRequest(c.local_address))
            assert refused.value.server_version == 1
            address = c.natpmp(wire.ExternalAddressRequest()).response
        assert str(address.external_address) == PROFILES["pcp-unsupp-version"].external_ip
    finally:
        server.stop()


def test_an_epoch_that_goes_back_voids_the_grants_and_the_next_apply_renews_them(
    tmp_path: Path, router_cache: str
) -> None:
    """On epoch-goes-back the daemon restarts every 10 minutes keeping its table: the backend sees the
    epoch run back and voids what it kept, the next plan adds the mapping again, and the same nonce
    renews the router's row instead of making a second one."""
    clock = SteppedClock()
    server = serve("epoch-goes-back", clock)
    try:
        cache = Cache(router_cache)
        m = load(manifest(tmp_path, "web"))
        clock.jumped += 300  # the router has been up for a while
        backend = api.connect(server.pcp_url(), cache, clock=clock)
        facts = api.read(backend, cache)
        assert apply(api.plan(m, facts), backend, store=facts.store, clock=clock).ok
        before = snapshot(server)
        assert api.plan(m, api.read(backend, cache)).changes == ()

        clock.jumped += 400  # past the daemon's restart at 600 s: its epoch is now about 100
        later = api.connect(server.pcp_url(), cache, clock=clock)
        assert later.list_mappings() == []
        facts = api.read(later, cache)
        plan = api.plan(m, facts)
        assert [c.name for c in plan.changes] == ["web"]
        assert apply(plan, later, store=facts.store, clock=clock).ok
        assert [r[:5] for r in snapshot(server)] == [r[:5] for r in before]
    finally:
        server.stop()


def test_emulate_serves_pcp_and_natpmp_on_the_port_the_flag_names(tmp_path: Path) -> None:
    """portctl emulate --pcp-port 0 says which UDP port it answers PCP and NAT-PMP on, and a NAT-PMP
    request there gets the emulator's external address."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "reconciler", "emulate", "--port", "0", "--pcp-port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the IGD line
        line = proc.stdout.readline()
        assert line.startswith("PCP and NAT-PMP on UDP: pcp://127.0.0.1:"), line
        port = int(line.split()[-1].rpartition(":")[2])
        with Client(LOOPBACK, port=port, deadline=30) as c:
            answer = c.natpmp(wire.ExternalAddressRequest()).response
        assert str(answer.external_address) == PROFILES["spec"].external_ip
    finally:
        proc.terminate()
        proc.wait(30)


# -- miniupnpd's PCP and NAT-PMP rules, as measured on 2.3.1 ---------------------------------------


def pcp_map(
    c: Client,
    nonce: bytes,
    internal: int,
    external: int,
    *,
    lifetime: int = 600,
    prefer_failure: bool = False,
    third_party: wire.IPAddress | None = None,
) -> wire.PcpResponse:
    request = wire.MapRequest(
        nonce,
        wire.IpProtocol.TCP,
        internal,
        c.local_address,
        lifetime,
        external,
        prefer_failure=prefer_failure,
        third_party=third_party,
    )
    return c.pcp(request).response


def test_a_delete_with_another_nonce_is_not_authorized_and_changes_nothing(server: EmulatorServer) -> None:
    """Only the nonce that made a PCP mapping deletes it; another gets NOT_AUTHORIZED, lifetime 0."""
    mine, other = b"m" * 12, b"o" * 12
    with client(server) as c:
        assert pcp_map(c, mine, 8103, 18103).ok
        before = snapshot(server)
        refused = pcp_map(c, other, 8103, 18103, lifetime=0)
        assert (refused.result, refused.lifetime) == (wire.Result.NOT_AUTHORIZED, 0)
        assert snapshot(server) == before
        assert pcp_map(c, mine, 8103, 18103, lifetime=0).ok
    assert snapshot(server) == []


def test_a_map_with_another_nonce_from_the_same_host_takes_the_mapping_over(server: EmulatorServer) -> None:
    """As on 2.3.1: a MAP with another nonce for the same internal port re-labels the row, and the
    first holder's delete is then NOT_AUTHORIZED."""
    mine, other = b"m" * 12, b"o" * 12
    with client(server) as c:
        assert pcp_map(c, mine, 8107, 18107).ok
        taken = pcp_map(c, other, 8107, 18107, prefer_failure=True)
        assert (taken.ok, taken.map and taken.map.external_port) == (True, 18107)
        assert snapshot(server) == [(18107, "TCP", LOOPBACK, 8107, miniupnpd_description(other))]
        assert pcp_map(c, mine, 8107, 18107, lifetime=0).result == wire.Result.NOT_AUTHORIZED


def test_a_port_another_mapping_holds_moves_even_with_prefer_failure(server: EmulatorServer) -> None:
    """As on 2.3.1: PREFER_FAILURE does not stop a move off a port another mapping holds; the other
    mapping stays byte-identical."""
    server.router.add(18104, "TCP", "192.168.1.77", 9104, "someone else")
    foreign = snapshot(server)
    with client(server) as c:
        granted = pcp_map(c, b"t" * 12, 8104, 18104, prefer_failure=True)
    assert granted.ok and granted.map is not None and granted.map.external_port == 18105
    assert [r for r in snapshot(server) if r[0] == 18104] == foreign


def test_prefer_failure_on_a_denied_port_fails_and_without_it_the_port_moves() -> None:
    """Where the rules deny ports below 1024, PREFER_FAILURE gets CANNOT_PROVIDE_EXTERNAL with
    lifetime 0 and nothing is mapped; without it the next allowed port is granted."""
    server = serve("no-privileged-ports")
    try:
        with client(server) as c:
            refused = pcp_map(c, b"d" * 12, 8080, 80, prefer_failure=True)
            assert (refused.result, refused.lifetime) == (wire.Result.CANNOT_PROVIDE_EXTERNAL, 0)
            assert snapshot(server) == []
            moved = pcp_map(c, b"d" * 12, 8080, 80)
        assert moved.ok and moved.map is not None and moved.map.external_port == 1024
    finally:
        server.stop()


def test_third_party_is_unsupp_option(server: EmulatorServer) -> None:
    """THIRD_PARTY is refused as miniupnpd refuses it without pcp_allow_thirdparty; nothing is mapped."""
    import ipaddress

    with client(server) as c:
        refused = pcp_map(c, b"n" * 12, 8108, 18108, third_party=ipaddress.IPv4Address("192.168.1.3"))
    assert refused.result == wire.Result.UNSUPP_OPTION
    assert snapshot(server) == []


def test_the_third_party_profile_maps_for_the_host_the_option_names() -> None:
    """Where the router maps for other hosts, a MAP with THIRD_PARTY is the named host's mapping (its
    row forwards there, described by the nonce); only the same nonce for that host deletes it."""
    import ipaddress

    server, nas = serve("pcp-third-party"), ipaddress.IPv4Address("192.168.1.3")
    try:
        with client(server) as c:
            granted = pcp_map(c, b"n" * 12, 8108, 18108, prefer_failure=True, third_party=nas)
            assert (granted.ok, granted.map and granted.map.external_port) == (True, 18108)
            assert snapshot(server) == [(18108, "TCP", str(nas), 8108, miniupnpd_description(b"n" * 12))]
            assert pcp_map(c, b"n" * 12, 8108, 18108, lifetime=0).ok  # this host's 8108: none to delete
            assert len(snapshot(server)) == 1
            assert pcp_map(c, b"o" * 12, 8108, 18108, lifetime=0, third_party=nas).result == wire.Result.NOT_AUTHORIZED
            assert pcp_map(c, b"n" * 12, 8108, 18108, lifetime=0, third_party=nas).ok
        assert snapshot(server) == []
    finally:
        server.stop()


def test_a_mapping_made_through_pcp_for_another_host_is_claimed_over_upnp(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """apply through pcp:// maps a port to another host (THIRD_PARTY); a plan over UPnP on the same
    router then claims that `PCP MAP` row as this owner's and re-tags it: not foreign, no conflict."""
    server = serve("pcp-third-party")
    text = MANIFEST.replace("internal_client: auto", "internal_client: 192.168.1.3").format(rows=ROWS["web"])
    path = write(tmp_path, text, "nas.yaml")
    try:
        applied = portctl(capsys, "apply", path, "--router", server.pcp_url(), "--auto-approve", "--no-color")
        assert applied.code == 0, applied.out + applied.err
        assert [r[:4] for r in snapshot(server)] == [(18080, "TCP", "192.168.1.3", 8080)]
        planned = portctl(capsys, "plan", path, "--router", server.url, "--json")
        assert planned.code == 0, planned.out + planned.err
        plan = json.loads(planned.out)
        assert [(c["action"], c["key"]["external_port"]) for c in plan["changes"]] == [("change", 18080)]
        assert "made through PCP by this owner" in plan["changes"][0]["reason"]
        assert plan["foreign"] == [] and plan["conflicts"] == []
    finally:
        server.stop()


def test_natpmp_for_the_same_internal_port_takes_a_upnp_mapping_over(server: EmulatorServer) -> None:
    """A NAT-PMP request from the host a UPnP mapping forwards to, for the same internal port,
    replaces that row (as a torrent client does on miniupnpd), and its lifetime-0 delete removes it."""
    server.router.add(19600, "TCP", LOOPBACK, 9600, "pc:abcdefgh web", lease=3600)
    with client(server) as c:
        granted = c.natpmp(wire.NatPmpMapRequest(wire.IpProtocol.TCP, 9600, 120, 29600)).response
        assert (granted.external_port, granted.lifetime) == (19600, 120)
        assert snapshot(server) == [(19600, "TCP", LOOPBACK, 9600, "NAT-PMP 19600 tcp")]
        deleted = c.natpmp(wire.NatPmpMapRequest(wire.IpProtocol.TCP, 9600, 0)).response
        assert (deleted.ok, deleted.lifetime) == (True, 0)
    assert snapshot(server) == []


def test_leases_run_on_the_emulators_clock_and_a_reboot_resets_the_epoch() -> None:
    """A PCP lifetime is held to the router's 120..86400 s and expires on its clock; a reboot empties
    the table and the epoch starts again, which portctl's epoch check calls a lost state."""
    from reconciler.backends.pcp.epoch import pcp_state_lost

    clock = SteppedClock()
    server = serve("spec", clock)
    try:
        with client(server) as c:
            short = pcp_map(c, b"s" * 12, 8110, 18110, lifetime=5)
            assert short.lifetime == 120
            clock.jumped += 121
            assert snapshot(server) == []
            clock.jumped += 1000
            first = c.pcp(wire.AnnounceRequest(c.local_address))
            server.reboot()
            clock.jumped += 3
            after = c.pcp(wire.AnnounceRequest(c.local_address))
        assert first.response.epoch >= 1121
        assert pcp_state_lost(first.response.epoch, first.received_at, after.response.epoch, after.received_at)
    finally:
        server.stop()


def test_a_big_endian_router_prints_the_nonce_words_the_other_way_round() -> None:
    """With byteorder big the UPnP description carries the wire nonce's bytes as they are."""
    server = EmulatorServer(Router(replace(PROFILES["spec"], byteorder="big")), pcp_port=0).start()
    try:
        with client(server) as c:
            assert pcp_map(c, OTHER_NONCE, 8111, 18111).ok
        assert snapshot(server)[0][4] == "PCP MAP 00112233445566778899aabb"
    finally:
        server.stop()


@pytest.mark.parametrize(("timeout", "deadline"), [(5.0, 21.0), (40.0, 40.0)])
def test_a_short_timeout_still_leaves_three_pcp_sends(
    server: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: float, deadline: float
) -> None:
    """UDP has no connection to fail fast on: each exchange gets at least the first three sends (21 s),
    whatever --timeout says; a longer --timeout is kept."""
    from reconciler.backends.pcp import backend as pcp_backend

    given: list[float] = []

    class Counted(Client):
        def __init__(self, *args: object, deadline: float, **kwargs: object) -> None:
            given.append(deadline)
            super().__init__(*args, deadline=deadline, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pcp_backend, "Client", Counted)
    b = api.connect(server.pcp_url("pcp"), Cache(str(tmp_path)), timeout=timeout)
    b.external_address()
    assert given and set(given) == {deadline}


OWNED = """\
apiVersion: portctl/v1
owner: {owner}
defaults: {{lease: {lease}, internal_client: auto}}
prune: true
mappings:
  - {{name: {name}, external_port: {port}, internal_port: {internal}, protocol: tcp{extra}}}
"""


def owned(tmp_path: Path, owner: str, name: str, port: int, internal: int, lease: str = "10m", extra: str = "") -> str:
    text = OWNED.format(owner=owner, name=name, port=port, internal=internal, lease=lease, extra=extra)
    return write(tmp_path, text, f"{owner}-{name}.yaml")


def test_a_lease_below_the_routers_min_lifetime_is_refused_and_nothing_stays_mapped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: EmulatorServer
) -> None:
    """The emulator raises a PCP lifetime to 120 s as miniupnpd does: a `lease: 1m` apply fails with the
    lease to ask for, the router's table is as it was (the other clients' rows byte-identical), and the
    next plan still proposes the add."""
    foreign = foreign_rows(server)
    router = ["--router", server.pcp_url("pcp"), "--no-color"]
    path = owned(tmp_path, "homelab", "web", 18080, 8080, lease="1m")
    applied = portctl(capsys, "apply", path, *router, "--auto-approve")
    assert applied.code != 0, applied.out + applied.err
    assert "granted 18080/tcp a lifetime of 120 s" in applied.out and "at least 120 s" in applied.out, applied.out
    assert sorted(snapshot(server)) == foreign
    again = portctl(capsys, "plan", path, *router)
    assert "add" in again.out and "18080/tcp" in again.out, again.out


def test_natpmp_next_free_never_claims_another_owners_mapping_of_the_same_internal_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: EmulatorServer
) -> None:
    """Owner other holds 18090 -> 8080 through NAT-PMP; owner rev2 declares 18080 -> 8080 next_free: the
    router answers with other's mapping (RFC 6886 3.3), which rev2's apply refuses instead of keeping,
    and rev2's later prune leaves it: other's row stays byte-identical and other still owns it."""
    router = ["--router", server.pcp_url("natpmp"), "--no-color"]
    theirs = owned(tmp_path, "other", "app", 18090, 8080)
    assert portctl(capsys, "apply", theirs, *router, "--auto-approve").code == 0
    before = snapshot(server)
    assert [r[:4] for r in before] == [(18090, "TCP", LOOPBACK, 8080)]

    moved = owned(tmp_path, "rev2", "web", 18080, 8080, extra=", on_conflict: next_free")
    planned = portctl(capsys, "plan", moved, *router)
    assert "next_free: NAT-PMP answers a request for an internal port already mapped" in planned.out, planned.out
    applied = portctl(capsys, "apply", moved, *router, "--auto-approve")
    assert applied.code != 0, applied.out + applied.err
    assert "answered 18080/tcp with external port 18090" in applied.out, applied.out
    assert snapshot(server) == before

    pruned = portctl(capsys, "apply", owned(tmp_path, "rev2", "api", 18070, 8070), *router, "--auto-approve")
    assert pruned.code == 0, pruned.out + pruned.err
    assert [r for r in snapshot(server) if r[0] == 18090] == before
    still = portctl(capsys, "plan", theirs, *router, "--detailed-exitcode")
    assert still.code == 0, still.out + still.err
