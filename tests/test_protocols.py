"""Choosing the protocol: the order, the probes on a virtual clock, the remembered choice, and a PCP
backend that does not ask NAT-PMP of a gateway that does not speak it. No emulator, no network."""

from __future__ import annotations

import io
import ipaddress
import threading
from collections.abc import Callable, Mapping, Sequence

import pytest

from reconciler import api, discovery, manifest, protocols
from reconciler.backends.base import Backend
from reconciler.backends.http import Exchange
from reconciler.backends.pcp import wire
from reconciler.backends.pcp.backend import PcpBackend
from reconciler.backends.pcp.traced import traced
from reconciler.backends.trace import Tracer
from reconciler.cache import Cache
from reconciler.errors import DiscoveryError, ManifestError, RouterUnreachable
from reconciler.models import MappingKey, PortMapping, RouterInfo
from reconciler.protocols import NATPMP, PCP, UPNP, BadOrder, Finding, Spoken
from tests.helpers import write
from tests.test_pcp_backend import DNS, FakeClient, FakeRouter, VirtualClock, row
from tests.test_pcp_backend import SECRET as PCP_SECRET
from tests.test_pcp_client import FakeGateway, Reply
from tests.test_pcp_client import VirtualClock as WireClock

GATEWAY = "192.168.1.1"
LOCATION = f"http://{GATEWAY}:5000/rootDesc.xml"
DEADLINE = 60.0  # a fake probe answers at once; a real one would be bounded by this


def spoken(protocol: str, detail: str = "") -> Probe:
    return lambda _deadline: Finding(protocol, True, detail, LOCATION if protocol == UPNP else "")


def silent(protocol: str) -> Probe:
    return lambda deadline: Finding(protocol, False, f"no answer in {deadline:g} s")


Probe = protocols.Probe


# -- the order -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "order"),
    [("upnp,pcp,natpmp", (UPNP, PCP, NATPMP)), ("natpmp", (NATPMP,)), (" PCP , upnp ", (PCP, UPNP))],
)
def test_an_order_is_read_as_written(text: str, order: tuple[str, ...]) -> None:
    """A comma-separated list is the order, case and spaces aside."""
    assert protocols.parse_order(text) == order


@pytest.mark.parametrize(
    ("text", "message"),
    [("upnp,igd", "unknown protocol igd"), ("pcp,pcp", "names a protocol twice"), (",", "at least one")],
)
def test_an_order_that_is_none_is_refused_saying_why(text: str, message: str) -> None:
    """An unknown name, a repeat or nothing is refused with the reason."""
    with pytest.raises(BadOrder, match=message):
        protocols.parse_order(text)


# -- probing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answering", "order", "choice"),
    [
        ({UPNP, PCP, NATPMP}, protocols.PROTOCOLS, UPNP),
        ({PCP, NATPMP}, protocols.PROTOCOLS, PCP),
        ({NATPMP}, protocols.PROTOCOLS, NATPMP),
        ({UPNP, PCP, NATPMP}, (NATPMP,), NATPMP),
        ({UPNP, PCP, NATPMP}, (PCP, UPNP), PCP),
        ({UPNP}, (PCP, NATPMP), None),
    ],
)
def test_the_first_protocol_of_the_order_the_gateway_speaks_is_chosen(
    answering: set[str], order: tuple[str, ...], choice: str | None
) -> None:
    """UPnP where it answers, else PCP, else NAT-PMP; an order given is followed; none: no choice."""
    probes = {p: spoken(p) if p in answering else silent(p) for p in order}
    assert protocols.probe(GATEWAY, probes, DEADLINE, order=order).choice(order) == choice


def test_the_choice_does_not_wait_for_probes_that_cannot_change_it() -> None:
    """UPnP answers first in the default order: the probe returns while PCP's is still out."""
    release = threading.Event()

    def held(deadline: float) -> Finding:
        release.wait(deadline)
        return Finding(PCP, True)

    try:
        found = protocols.probe(GATEWAY, {UPNP: spoken(UPNP), PCP: held}, DEADLINE, order=protocols.PROTOCOLS)
    finally:
        release.set()
    assert (found.choice(protocols.PROTOCOLS), PCP in found.findings) == (UPNP, False)


def test_without_an_order_every_probe_is_waited_for() -> None:
    """discover and show say all the gateway speaks: every probe's finding is kept."""
    probes = {UPNP: silent(UPNP), PCP: spoken(PCP, "epoch 7"), NATPMP: spoken(NATPMP)}
    found = protocols.probe(GATEWAY, probes, DEADLINE)
    assert (found.spoken, found.findings[PCP].detail) == ((PCP, NATPMP), "epoch 7")


def test_a_probe_that_fails_counts_as_silent() -> None:
    """A probe that raises says only that its protocol is not spoken; the next one is chosen."""

    def broken(_deadline: float) -> Finding:
        raise OSError("network is down")

    found = protocols.probe(GATEWAY, {PCP: broken, NATPMP: spoken(NATPMP)}, DEADLINE, order=(PCP, NATPMP))
    assert (found.choice((PCP, NATPMP)), found.findings[PCP].spoken) == (NATPMP, False)


def gateway_answering(reply: Callable[[bytes], bytes | None]) -> tuple[Callable[[str, int], FakeGateway], WireClock]:
    clock = WireClock()

    def handler(data: bytes, _sends: int) -> list[Reply]:
        answer = reply(data)
        return [] if answer is None else [(0.01, answer, (GATEWAY, wire.PORT))]

    return (lambda _h, _p: FakeGateway(clock, handler)), clock


def natpmp_only(data: bytes) -> bytes:
    """A NAT-PMP-only server: any request in another version gets version 0 UNSUPPORTED_VERSION."""
    if data[0] != 0:
        return bytes([0, 0x80 | data[1], 0, 1]) + (99).to_bytes(4, "big")
    return bytes([0, 0x80, 0, 0]) + (99).to_bytes(4, "big") + bytes([25, 77, 0, 2])


def test_a_pcp_probe_answered_unsupp_version_proves_natpmp() -> None:
    """UNSUPP_VERSION in version 0 to PCP's ANNOUNCE: NAT-PMP is chosen without its own probe's answer."""
    factory, clock = gateway_answering(natpmp_only)
    pcp = discovery.pcp_probe(GATEWAY, socket_factory=factory, clock=clock)
    never = threading.Event()

    def natpmp_unanswered(deadline: float) -> Finding:
        never.wait(deadline)
        return Finding(NATPMP, False)

    order = (PCP, NATPMP)
    try:
        found = protocols.probe(GATEWAY, {PCP: pcp, NATPMP: natpmp_unanswered}, DEADLINE, order=order)
    finally:
        never.set()
    assert (found.choice(order), found.findings[PCP].proves, NATPMP in found.findings) == (NATPMP, NATPMP, False)


def test_the_real_probes_read_pcp_and_natpmp_answers_on_virtual_time() -> None:
    """A gateway speaking both: ANNOUNCE gives its epoch, NAT-PMP its external address."""

    def both(data: bytes) -> bytes:
        if data[0] == 2:  # PCP ANNOUNCE: header only
            return bytes([2, 0x80, 0, 0]) + bytes(4) + (5).to_bytes(4, "big") + bytes(12)
        return natpmp_only(data)

    factory, clock = gateway_answering(both)
    pcp = discovery.pcp_probe(GATEWAY, socket_factory=factory, clock=clock)(3.0)
    natpmp = discovery.natpmp_probe(GATEWAY, socket_factory=factory, clock=clock)(3.0)
    assert (pcp.spoken, pcp.detail, natpmp.spoken, natpmp.detail) == (
        True,
        "epoch 5",
        True,
        "external address 25.77.0.2, epoch 99",
    )


def test_a_silent_gateway_fails_the_probe_by_its_deadline() -> None:
    """No answer: not spoken, and the virtual clock shows the probe gave up at its deadline."""
    factory, clock = gateway_answering(lambda _data: None)
    found = discovery.pcp_probe(GATEWAY, socket_factory=factory, clock=clock)(2.0)
    assert (found.spoken, clock.now) == (False, 2.0)


def test_probe_datagrams_are_traced_as_exchanges() -> None:
    """--trace shows the ANNOUNCE sent and its answer, in hex, with the result read from it."""
    factory, clock = gateway_answering(natpmp_only)
    out = io.StringIO()
    discovery.pcp_probe(GATEWAY, observe=Tracer(out), socket_factory=factory, clock=clock)(3.0)
    text = out.getvalue().splitlines()
    assert text[0] == f"trace: PCP udp://{GATEWAY}:5351 ANNOUNCE: sent 24 bytes"
    assert text[1].startswith("trace:   > 02000000 00000000 0000")
    assert any(
        line.startswith(f"trace: NAT-PMP udp://{GATEWAY}:5351 EXTERNAL_ADDRESS: received 8 bytes after ")
        and line.endswith("; result UNSUPPORTED_VERSION, epoch 99")
        for line in text
    ), text
    assert "trace:   < 00800001 00000063" in text


# -- the remembered choice -----------------------------------------------------------------------


class Chosen(Backend):
    """Stands for the backend `api.connect` would build for the protocol chosen."""

    def __init__(self, protocol: str, address: str) -> None:
        self.info = RouterInfo(protocol, address, address)

    def list_mappings(self) -> list[PortMapping]:
        return []

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        return None

    def add_mapping(self, mapping: PortMapping, window: object = None) -> None:
        pass

    def delete_mapping(self, mapping: PortMapping) -> None:
        pass

    def local_address(self) -> str:
        return "192.168.1.10"

    def external_address(self) -> str:
        return ""


@pytest.fixture
def network(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> Cache:
    """A host whose default gateway is GATEWAY (a routing table of its own), and an empty cache."""
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n"
    )
    monkeypatch.setattr(discovery, "ROUTE_TABLE", write(tmp_path, table, "route"))
    return Cache(str(tmp_path))


class Gateway:
    """Fake probes for the protocols in `answering`, counting how often the gateway was probed."""

    def __init__(self, answering: set[str]) -> None:
        self.answering = answering
        self.probed: list[tuple[str, ...]] = []
        self.connected: list[tuple[str, bool]] = []
        self.refuse = False

    def probes(self, gateway: str | None, order: Sequence[str]) -> Mapping[str, Probe]:
        assert gateway == GATEWAY
        self.probed.append(tuple(order))
        return {p: spoken(p) if p in self.answering else silent(p) for p in order}

    def chosen(self, protocol: str, found: Spoken, cached: bool) -> Backend:
        self.connected.append((protocol, cached))
        if self.refuse:
            raise RouterUnreachable("gone")
        address = LOCATION if protocol == UPNP else f"{protocol}://{found.gateway}"
        return Chosen(protocol, address)


def connect(cache: Cache, gw: Gateway, order: Sequence[str] = protocols.PROTOCOLS) -> Backend:
    return api._discovered(cache, gw.chosen, order, DEADLINE, False, None, gw.probes)


def test_a_warm_run_uses_the_remembered_choice_without_probing(network: Cache) -> None:
    """The first run probes and picks PCP (no UPnP); the second connects to PCP at once."""
    gw = Gateway({PCP, NATPMP})
    connect(network, gw)
    connect(network, gw)
    assert (gw.probed, gw.connected) == ([protocols.PROTOCOLS], [(PCP, False), (PCP, True)])


def test_a_remembered_choice_that_fails_is_probed_again(network: Cache) -> None:
    """The remembered gateway is gone: the network is probed afresh, and that answer kept."""
    gw = Gateway({PCP})
    connect(network, gw)
    gw.refuse = True
    with pytest.raises(RouterUnreachable):
        connect(network, gw)
    assert gw.probed == [protocols.PROTOCOLS, protocols.PROTOCOLS]


def test_a_remembered_answer_decides_only_what_it_probed(network: Cache) -> None:
    """Forced to NAT-PMP once, only NAT-PMP was probed: the default order must probe UPnP and PCP."""
    gw = Gateway({UPNP, PCP, NATPMP})
    connect(network, gw, (NATPMP,))
    backend = connect(network, gw)
    assert (gw.probed, backend.info.protocol) == ([(NATPMP,), protocols.PROTOCOLS], UPNP)


def test_a_location_remembered_by_an_older_portctl_is_upnp(network: Cache) -> None:
    """A record of a location alone (what was kept before protocols were probed) still saves probing."""
    network.put("networks", discovery.network_key(), {"location": LOCATION})
    gw = Gateway(set())
    backend = connect(network, gw)
    assert (gw.probed, backend.info.address) == ([], LOCATION)


def test_a_gateway_that_speaks_nothing_asked_is_an_error_naming_each_answer(network: Cache) -> None:
    """No protocol answers: one message saying what each probe found."""
    with pytest.raises(DiscoveryError, match=r"answered none of UPnP IGD, PCP.*PCP: no answer in 60 s"):
        connect(network, Gateway(set()), (UPNP, PCP))


def test_the_order_comes_from_the_flag_then_the_manifest() -> None:
    """--protocols (PORTCTL_PROTOCOLS) wins over router.protocols; without either, all three."""
    m = manifest.parse("apiVersion: portctl/v1\nowner: o\nrouter: {protocols: [natpmp, pcp]}\nmappings: []\n", "m.yaml")
    assert [api.protocol_order((PCP,), m), api.protocol_order(None, m), api.protocol_order(None, None)] == [
        (PCP,),
        (NATPMP, PCP),
        protocols.PROTOCOLS,
    ]


# -- the manifest --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ("{protocols: [upnp, igd]}", "m.yaml:3:"),
        ("{protocols: [pcp, pcp]}", "m.yaml:3:"),
        ("{protocols: []}", "m.yaml:3:"),
        ("{url: 'http://192.168.1.1:5000/r.xml', protocols: [natpmp]}", "router.protocols (natpmp) leaves out"),
    ],
)
def test_router_protocols_that_are_no_order_are_refused_at_their_line(router: str, message: str) -> None:
    """An unknown name, a repeat, an empty list, or a url of a protocol left out: file:line and why."""
    text = f"apiVersion: portctl/v1\nowner: o\nrouter: {router}\nmappings: []\n"
    with pytest.raises(ManifestError) as refused:
        manifest.parse(text, "m.yaml")
    assert message in str(refused.value), str(refused.value)
    assert "m.yaml:3:" in str(refused.value)


# -- PCP without NAT-PMP ---------------------------------------------------------------------------


class PcpOnly(FakeClient):
    def natpmp(self, request: wire.NatPmpRequest) -> object:  # type: ignore[override]
        raise AssertionError("NAT-PMP asked of a gateway that does not speak it")


def test_a_pcp_only_gateway_is_never_asked_natpmp(tmp_path: str) -> None:
    """Connected with natpmp_spoken=False: the external address comes from the MAP answer, and is
    remembered for the next run."""
    router = FakeRouter(VirtualClock())
    cache = Cache(str(tmp_path), clock=router.clock)

    def make() -> PcpBackend:
        return PcpBackend(
            GATEWAY,
            mode="pcp",
            cache=cache,
            open_client=lambda: PcpOnly(router),
            secret=PCP_SECRET,
            natpmp_spoken=False,
        ).connect()

    first = make()
    before = first.info.external_ip
    first.add_mapping(row(DNS, 53))
    again = make()
    assert (before, first.info.external_ip, again.info.external_ip) == ("", "11.22.33.1", "11.22.33.1")
    assert ipaddress.ip_address(again.external_address()) == ipaddress.IPv4Address("11.22.33.1")


def test_the_traced_socket_passes_datagrams_through_unchanged() -> None:
    """Tracing changes nothing of what is sent or received."""
    factory, clock = gateway_answering(natpmp_only)
    seen: list[Exchange] = []
    sock = traced(seen.append, factory, clock)(GATEWAY, wire.PORT)
    sock.send(bytes([0, 0]))
    sock.settimeout(1.0)
    data, sender = sock.recvfrom(1100)
    assert (data[:4], sender, [x.method for x in seen]) == (
        bytes([0, 0x80, 0, 0]),
        (GATEWAY, wire.PORT),
        ["NAT-PMP"] * 2,
    )
