"""Every quirk profile of the emulator through plan -> apply -> plan: converged, or stopped before any write."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import requests

from reconciler import discovery, quirks
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.errors import UpnpActionError
from reconciler.models import MappingKey, PortMapping, Protocol
from tests.helpers import FOREIGN, Run, portctl, route_table, snapshot, write

LAN = "127.0.0.1"  # the emulator sees portctl's requests coming from here
EMULATED_LAN = "192.168.1.0/24"  # the subnet the emulator tests call this host's LAN

BASE = """\
apiVersion: portctl/v1
owner: quirks
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    internal_client: 127.0.0.1
    lease: 1h
    description: reverse proxy
  - name: game
    external_port: 27015
    protocol: both
    internal_client: 127.0.0.1
"""
# Profiles whose quirk only shows with a particular mapping get a manifest that has it.
# Needs that widen exposure are planned only with the manifest's opt-in.
PERMANENT_ALLOWED = BASE.replace("mappings:\n", "defaults:\n  allow_permanent: true\nmappings:\n")
MANIFESTS = {
    "wildcard-remote-only": BASE
    + "  - name: admin\n    external_port: 8443\n    internal_client: 127.0.0.1\n    remote_host: 198.51.100.7\n"
    + "    allow_any_remote_host: true\n",
    "same-port-only": BASE.replace("    lease: 1h\n", "    lease: 1h\n    allow_same_port: true\n", 1),
    "permanent-only": PERMANENT_ALLOWED,
    "arris": PERMANENT_ALLOWED,
}
# Profiles whose need first shows as a refused write: that mapping fails, the next plan adapts it.
REVEALED_BY_A_WRITE = {"permanent-only", "arris", "finite-only", "same-port-only", "wildcard-remote-only"}
SSDP_ONLY = {"ssdp-odd-port", "ssdp-unicast-only"}  # wire-identical to spec over HTTP; see test_discovery
CANNOT_CONVERGE = {"cgnat", "wildcard-external-only"}
SLOW = {"slow"}


@dataclass
class Cycle:
    server: EmulatorServer
    path: str
    first: Run
    applied: Run
    second: Run
    revealed: Run | None = None  # the first apply, when the router's need showed in it


@pytest.fixture
def serve() -> Iterator[type[EmulatorServer]]:
    servers: list[EmulatorServer] = []

    class Started(EmulatorServer):
        def __init__(self, router: Router) -> None:
            super().__init__(router)
            servers.append(self.start())

    yield Started
    for s in servers:
        s.stop()


def cycle(
    capsys: pytest.CaptureFixture[str], server: EmulatorServer, path: str, *extra: str, reveal: bool = False
) -> Cycle:
    """plan, apply, plan; with `reveal`, an apply first in which the router shows its need."""
    common = ["--router", server.url, "--no-color", *extra]
    first = portctl(capsys, "plan", path, *common)
    revealed = portctl(capsys, "apply", path, "--auto-approve", *common) if reveal else None
    applied = portctl(capsys, "apply", path, "--auto-approve", *common)
    second = portctl(capsys, "plan", path, "--detailed-exitcode", *common)
    return Cycle(server, path, first, applied, second, revealed)


def owned_rows(server: EmulatorServer) -> set[tuple[int, str]]:
    return {(e.external_port, e.protocol) for e in server.router.rows() if e.description.startswith("pc:")}


CONVERGING = sorted(set(PROFILES) - SSDP_ONLY - CANNOT_CONVERGE - SLOW)


@pytest.mark.parametrize("name", CONVERGING)
def test_profile_converges(
    name: str, tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """On every profile that allows it, one apply converges: the next plan has nothing to do."""
    server = serve(Router(PROFILES[name]))
    path = write(tmp_path, MANIFESTS.get(name, BASE))
    c = cycle(capsys, server, path, reveal=name in REVEALED_BY_A_WRITE)
    assert c.first.code == 0, c.first.err
    if c.revealed is not None:
        # The plan did not show the adapted row, so the first apply never writes it.
        assert c.revealed.code == 1, c.revealed.out + c.revealed.err
        assert "Nothing else was written; the next plan shows the adapted row" in c.revealed.out
        assert "Run apply again to finish" in c.revealed.out
    assert c.applied.code == 0, c.applied.out + c.applied.err
    assert c.second.code == 0, c.second.out
    assert "Plan: 0 to add, 0 to change, 0 to remove." in c.second.out
    expected = {(8080, "TCP"), (27015, "TCP"), (27015, "UDP")}
    expected |= {(8443, "TCP")} if name == "wildcard-remote-only" else set()
    assert owned_rows(server) == expected
    assert "Traceback" not in c.applied.err + c.second.err


def learned(server: EmulatorServer) -> quirks.Learned:
    return Cache.from_env().learned(server.udn)


@pytest.mark.parametrize(
    ("name", "quirk", "check"),
    [
        ("permanent-only", quirks.Quirk.PERMANENT_ONLY, lambda e: e.expires is None),
        ("arris", quirks.Quirk.PERMANENT_ONLY, lambda e: e.expires is None),
        ("finite-only", quirks.Quirk.FINITE_ONLY, lambda e: e.expires is not None),
        ("same-port-only", quirks.Quirk.SAME_PORT_ONLY, lambda e: e.internal_port == e.external_port),
        ("wildcard-remote-only", quirks.Quirk.WILDCARD_REMOTE_ONLY, lambda e: e.remote_host == ""),
        ("truncates-descriptions", quirks.Quirk.TRUNCATES_DESCRIPTIONS, lambda e: len(e.description) <= 16),
        ("list-resets", quirks.Quirk.NO_PORT_LISTING, lambda e: True),
    ],
)
def test_profile_teaches_its_quirk(
    name: str,
    quirk: quirks.Quirk,
    check: object,
    tmp_path: str,
    capsys: pytest.CaptureFixture[str],
    serve: type[EmulatorServer],
) -> None:
    """The router's need is remembered under its UDN, shown by `show`, and the rows are what it allows."""
    server = serve(Router(PROFILES[name]))
    path = write(tmp_path, MANIFESTS.get(name, BASE))
    assert cycle(capsys, server, path, reveal=name in REVEALED_BY_A_WRITE).second.code == 0
    assert quirk in learned(server)
    assert learned(server).quirks[quirk].proven  # a 402 is proven by the accepted request differing in one field
    assert callable(check)
    assert all(check(e) for e in server.router.rows() if e.description.startswith("pc:"))
    shown = portctl(capsys, "show", path, "--router", server.url, "--no-color")
    assert quirks.MEANING[quirk] in shown.out
    assert f"[{quirk}; seen:" in shown.out


def test_learned_quirk_is_planned_for_without_failed_writes(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """Once a router taught 725, the next apply asks for permanent leases at once: no refused add."""
    server = serve(Router(PROFILES["permanent-only"]))
    path = write(tmp_path, PERMANENT_ALLOWED)
    assert cycle(capsys, server, path, reveal=True).second.code == 0
    server.router.entries.clear()  # a reboot without a lease file
    before = server.router.calls["AddPortMapping"]
    run = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
    assert run.code == 0, run.out
    assert server.router.calls["AddPortMapping"] - before == 3  # one add per mapping, none refused
    assert "it accepts only permanent leases" in run.out


def test_list_resets_is_not_retried_once_learned(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """After GetListOfPortMappings reset the connection once, later reads go entry by entry straight away."""
    server = serve(Router(PROFILES["list-resets"]))
    path = write(tmp_path, BASE)
    assert cycle(capsys, server, path).second.code == 0
    before = server.router.calls["GetListOfPortMappings"]
    assert portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode").code == 0
    assert server.router.calls["GetListOfPortMappings"] == before


def test_same_port_refused_without_permission_then_a_conflict_up_front(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """Without allow_same_port, a 724 is a refusal naming the fix, and the next plan blocks before any write."""
    server = serve(Router(PROFILES["same-port-only"]))
    path = write(tmp_path, BASE)
    c = cycle(capsys, server, path)
    assert c.applied.code == 1
    assert "AddPortMapping failed: 724 SamePortValuesRequired" in c.applied.out
    assert "set internal_port: 8080, or allow_same_port: true" in c.applied.out
    assert owned_rows(server) == {(27015, "TCP"), (27015, "UDP")}  # the others applied; nothing stray
    adds = server.router.calls["AddPortMapping"]
    again = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
    assert again.code == 1
    assert "requires the internal port to equal the external port" in again.out
    assert server.router.calls["AddPortMapping"] == adds


def test_privileged_port_refused_then_a_conflict_up_front(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """A port below 1024 on a router that refuses them fails with the remedy; next time the plan says so first."""
    server = serve(Router(PROFILES["no-privileged-ports"]))
    https = "  - name: https\n    external_port: 443\n    internal_client: 127.0.0.1\n    allow_sensitive: true\n"
    path = write(tmp_path, BASE + https)
    c = cycle(capsys, server, path)
    assert c.applied.code == 1
    assert "choose an external port of 1024 or more" in c.applied.out
    assert (443, "TCP") not in owned_rows(server)
    assert c.second.code == 1
    assert "! https" in c.second.out and "refuses external ports below 1024" in c.second.out


@pytest.mark.parametrize(
    ("external_ip", "cause"),
    [
        ("100.64.12.34", "carrier-grade NAT"),
        ("0.0.0.0", "its internet connection is down"),
        ("192.168.0.2", "double NAT"),
    ],
)
def test_unusable_wan_address_stops_before_any_write(
    external_ip: str, cause: str, tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """CGNAT, no address or a private one: plan says so up front with the remedy, and apply writes nothing."""
    server = serve(Router(PROFILES["cgnat"], external_ip=external_ip))
    c = cycle(capsys, server, write(tmp_path, BASE))
    assert c.first.code == 1
    assert cause in c.first.out
    assert c.applied.code == 1
    assert cause in c.applied.err and "Nothing was changed" in c.applied.err
    assert server.router.calls["AddPortMapping"] == 0
    assert snapshot(server) == []


def test_private_wan_can_be_allowed_in_the_manifest(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """router.allow_private_wan lets a double-NAT user map on the inner router."""
    server = serve(Router(external_ip="10.0.0.2"))
    text = BASE.replace("mappings:\n", "router:\n  allow_private_wan: true\nmappings:\n")
    c = cycle(capsys, server, write(tmp_path, text))
    assert c.applied.code == 0
    assert c.second.code == 0


def test_wildcard_external_only_stops_at_the_first_refusal(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """727 on the first add stops the apply: one refused request, nothing else sent, and the plan knows next time."""
    server = serve(Router(PROFILES["wildcard-external-only"]))
    c = cycle(capsys, server, write(tmp_path, BASE))
    assert c.applied.code == 1
    assert "727 ExternalPortOnlySupportsWildcard" in c.applied.out
    assert "cannot map a specific external port" in c.applied.out
    assert "not attempted" in c.applied.out
    assert server.router.calls["AddPortMapping"] == 1
    assert snapshot(server) == []
    assert c.second.code == 1
    assert server.router.calls["AddPortMapping"] == 1


@pytest.fixture
def lan(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This host is attached to EMULATED_LAN only, whatever the machine running the tests is on."""
    monkeypatch.setattr(discovery, "ROUTE_TABLE", route_table(tmp_path, EMULATED_LAN))
    return EMULATED_LAN


@pytest.mark.parametrize("igd_version", [1, 2])
def test_secure_mode_refuses_another_host_before_any_write(
    igd_version: int, tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer], lan: str
) -> None:
    """A mapping for another LAN host is tried first, refused (606/718), and nothing else is written."""
    server = serve(Router(PROFILES["secure-mode"], igd_version=igd_version))
    path = write(tmp_path, BASE + "  - name: nas\n    external_port: 5001\n    internal_client: 192.168.1.50\n")
    c = cycle(capsys, server, path)
    assert c.applied.code == 1
    assert "secure mode" in c.applied.out
    assert "Run portctl on 192.168.1.50, or turn off secure mode" in c.applied.out
    assert snapshot(server) == []
    assert server.router.calls["AddPortMapping"] == 1
    assert c.second.code == 1
    assert "! nas" in c.second.out
    assert server.router.calls["AddPortMapping"] == 1


# Another client's mapping to this very host: it proves nothing about secure mode, and must stay as it was.
LOCAL_FOREIGN = (9999, "TCP", LAN, 9999, "someone else's game server")
OFF_LAN = BASE + "  - name: typo\n    external_port: 5001\n    internal_client: 10.0.0.5\n"


def failure(run: Run, name: str) -> str:
    """The apply report's line for the failed change of mapping `name`."""
    return next(line for line in run.out.splitlines() if line.strip().startswith("FAILED") and f" {name} " in line)


def cached_text() -> str:
    with open(_cache_path()) as f:
        return f.read()


@pytest.mark.parametrize(("profile", "igd_version"), [("secure-mode", 1), ("secure-mode", 2), ("permission-rules", 2)])
def test_off_lan_client_is_refused_alone_and_teaches_nothing(
    profile: str,
    igd_version: int,
    tmp_path: str,
    capsys: pytest.CaptureFixture[str],
    serve: type[EmulatorServer],
    lan: str,
) -> None:
    """A client on no subnet of this host is refused alone, with both causes named; nothing is learned."""
    server = serve(Router(PROFILES[profile], igd_version=igd_version))
    server.router.add(*LOCAL_FOREIGN)
    c = cycle(capsys, server, write(tmp_path, OFF_LAN))
    assert c.applied.code == 1
    refusal = failure(c.applied, "typo")
    assert "10.0.0.5 is not on this host's LAN (192.168.1.0/24)" in refusal
    assert "(secure mode, permission rules)" in refusal
    assert owned_rows(server) == {(8080, "TCP"), (27015, "TCP"), (27015, "UDP")}  # the siblings were applied
    assert snapshot(server)[0] == LOCAL_FOREIGN and len(snapshot(server)) == 4
    assert quirks.Quirk.SECURE_MODE not in learned(server)
    assert "secure-mode" not in cached_text()
    assert "Traceback" not in c.applied.err


def test_off_lan_typo_does_not_block_another_owners_lan_host(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer], lan: str
) -> None:
    """After a typo's refusal, another owner's mapping to a LAN host is planned and applied as usual."""
    server = serve(Router(PROFILES["permission-rules"]))
    server.router.add(*LOCAL_FOREIGN)
    assert cycle(capsys, server, write(tmp_path, OFF_LAN)).applied.code == 1
    other = "apiVersion: portctl/v1\nowner: other\nmappings:\n"
    other += "  - {name: nas, external_port: 5002, internal_client: 192.168.1.50}\n"
    c = cycle(capsys, server, write(tmp_path, other, "other.yaml"))
    assert c.applied.code == 0, c.applied.out + c.applied.err
    assert c.second.code == 0
    assert (5002, "TCP", "192.168.1.50", 5002) in {row[:4] for row in snapshot(server)}
    assert LOCAL_FOREIGN in snapshot(server)


def test_privileged_port_for_another_host_names_both_causes_and_teaches_nothing(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer], lan: str
) -> None:
    """606 for another LAN host's port 443 may be permission rules or secure mode: both are said, none learned."""
    server = serve(Router(PROFILES["permission-rules"]))
    server.router.add(*LOCAL_FOREIGN)
    https = "  - name: https\n    external_port: 443\n    internal_client: 192.168.1.50\n    allow_sensitive: true\n"
    c = cycle(capsys, server, write(tmp_path, BASE + https))
    assert c.applied.code == 1
    refusal = failure(c.applied, "https")
    assert "606" in refusal and "secure mode" in refusal and "permission rules" in refusal
    assert owned_rows(server) == {(8080, "TCP"), (27015, "TCP"), (27015, "UDP")}
    assert learned(server).quirks == {}
    assert LOCAL_FOREIGN in snapshot(server)


def test_a_mapping_to_another_host_in_the_table_disproves_secure_mode(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer], lan: str
) -> None:
    """While the router lists a mapping to another host, a refusal for a LAN host is not learned as secure mode."""
    server = serve(Router(PROFILES["secure-mode"]))
    server.router.add(*FOREIGN)
    path = write(tmp_path, BASE + "  - name: nas\n    external_port: 5001\n    internal_client: 192.168.1.50\n")
    c = cycle(capsys, server, path)
    assert c.applied.code == 1
    refusal = failure(c.applied, "nas")
    assert "It holds a mapping to 192.168.1.77 (9999/tcp), so secure mode is unlikely" in refusal
    assert "permission rules" in refusal
    assert owned_rows(server) == {(8080, "TCP"), (27015, "TCP"), (27015, "UDP")}
    assert quirks.Quirk.SECURE_MODE not in learned(server)
    assert snapshot(server)[0] == FOREIGN


def _nas(port: int = 5001, client: str = "192.168.1.50") -> PortMapping:
    return PortMapping(MappingKey(port, Protocol.TCP), client, port, "pc:x")


_LAN = (ipaddress.IPv4Network(EMULATED_LAN),)


@pytest.mark.parametrize(
    ("request_", "then", "learn"),
    [
        (quirks.Request(_nas(443), "", lan=_LAN), quirks.Then.REFUSE, None),  # this host's address unknown
        (quirks.Request(_nas(), "192.168.1.2", lan=None), quirks.Then.REFUSE, None),  # its subnets unknown
        (quirks.Request(_nas(client="10.0.0.5"), "192.168.1.2", lan=_LAN), quirks.Then.REFUSE, None),
        (quirks.Request(_nas(443), "192.168.1.2", lan=_LAN), quirks.Then.REFUSE, None),
        (quirks.Request(_nas(), "192.168.1.2", lan=_LAN, other_host_held="192.168.1.9"), quirks.Then.REFUSE, None),
    ],
)
@pytest.mark.parametrize("code", [606, 718])
def test_secure_mode_is_learned_only_without_doubt(
    request_: quirks.Request, then: quirks.Then, learn: quirks.Quirk | None, code: int
) -> None:
    """A refusal in doubt (an unknown host or LAN, off the LAN, a privileged port, another host's mapping held)
    is refused alone and teaches nothing; test_pure's table has the case that does teach secure mode."""
    decision = quirks.decide("AddPortMapping", UpnpActionError("AddPortMapping", code), request_)
    assert decision is not None
    assert (decision.then, decision.learn) == (then, learn)


def test_learned_secure_mode_refuses_another_host_when_this_hosts_address_is_unknown() -> None:
    """An unknown local address is not taken for the mapping's host: the planner refuses it."""
    learned_ = quirks.Learned({quirks.Quirk.SECURE_MODE: quirks.Lesson("AddPortMapping answered 606", True, 0.0)})
    shaped = quirks.shape(_nas(), learned_, quirks.Request(local=""))
    assert isinstance(shaped, str) and "address towards it is unknown" in shaped


def test_secure_mode_converges_for_this_host(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """Mappings for the host portctl runs on converge on a router in secure mode."""
    server = serve(Router(PROFILES["secure-mode"]))
    c = cycle(capsys, server, write(tmp_path, BASE))
    assert c.applied.code == 0
    assert c.second.code == 0
    assert owned_rows(server) == {(8080, "TCP"), (27015, "TCP"), (27015, "UDP")}


def test_two_wan_chooses_the_connected_service(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """The dead WAN connection listed first is passed over; its table stays empty."""
    server = serve(Router(PROFILES["two-wan"]))
    c = cycle(capsys, server, write(tmp_path, BASE))
    assert c.second.code == 0
    assert f"external IP {PROFILES['two-wan'].external_ip}" in c.second.out
    dead = [r for path, r in server.controls.items() if r is not server.router]
    assert len(dead) == 1 and dead[0].rows() == []


def test_flaky_router_is_retried_and_converges(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """A router failing one request in five still converges, because each failure is retried once."""
    server = serve(Router(PROFILES["flaky"]))
    c = cycle(capsys, server, write(tmp_path, BASE))
    assert c.applied.code == 0, c.applied.out + c.applied.err
    assert c.second.code == 0
    assert server.requests >= 3 * 5  # several failures were injected and survived


def test_strict_soap_profile_rejects_sloppy_requests(serve: type[EmulatorServer]) -> None:
    """The strict profile really is strict, so portctl converging on it proves its requests are exact."""
    server = serve(Router(PROFILES["strict-soap"]))
    control = server.url.replace("/rootDesc.xml", "/ctl/IPConn")
    st = server.service_type
    good = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<u:GetExternalIPAddress xmlns:u="{st}"/></s:Body></s:Envelope>'
    )
    unprefixed = good.replace(f'<u:GetExternalIPAddress xmlns:u="{st}"/>', f'<GetExternalIPAddress xmlns="{st}"/>')
    exact = f'"{st}#GetExternalIPAddress"'
    for body, action, ok in [
        (good, exact, True),
        ("  " + good, exact, False),
        (unprefixed, exact, False),
        (good, exact.strip('"'), False),
    ]:
        resp = requests.post(control, data=body.encode(), headers={"SOAPAction": action}, timeout=5)
        assert (resp.status_code == 200) == ok, (body[:40], action, resp.text)


def test_slow_router_converges_within_the_timeout(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """Answers 2 s late are waited for (the default timeout is 5 s); the cycle converges."""
    server = serve(Router(PROFILES["slow"]))
    one = "apiVersion: portctl/v1\nowner: quirks\nmappings:\n  - {name: web, external_port: 8080}"
    c = cycle(capsys, server, write(tmp_path, one))
    assert c.applied.code == 0
    assert c.second.code == 0


def test_slow_router_beyond_the_timeout_is_one_clear_error(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """With --timeout below the router's delay, plan fails with the wait named, and nothing is written."""
    server = serve(Router(replace(PROFILES["slow"], delay=1.5)))
    run = portctl(capsys, "plan", write(tmp_path, BASE), "--router", server.url, "--timeout", "0.5")
    assert run.code == 1
    assert "did not answer within 0.5s" in run.err
    assert "Traceback" not in run.err


def test_show_json_reports_what_was_learned(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """show --json carries the learned quirks with their evidence."""
    server = serve(Router(PROFILES["permanent-only"]))
    path = write(tmp_path, BASE)
    cycle(capsys, server, path)
    doc = json.loads(portctl(capsys, "show", "--router", server.url, "--json").out)
    assert doc["learned"]["quirks"]["permanent-only"]["evidence"].startswith("AddPortMapping answered 725")


def test_unreadable_cache_is_ignored(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer], router_cache: str
) -> None:
    """A corrupt cache file is a cache miss, not an error; the next run rewrites it."""
    with open(_cache_path(), "w") as f:
        f.write("{not json")
    server = serve(Router(PROFILES["permanent-only"]))
    c = cycle(capsys, server, write(tmp_path, PERMANENT_ALLOWED), reveal=True)
    assert c.second.code == 0
    assert quirks.Quirk.PERMANENT_ONLY in learned(server)


SPACED = """\
apiVersion: portctl/v1
owner: quirks
mappings:
  - {name: web, external_port: 8080, internal_client: 127.0.0.1, description: 'proxy '}
"""
LONG = "  - {name: game, external_port: 8081, internal_client: 127.0.0.1, description: 'a description well past 16'}\n"


def test_trailing_space_lost_on_read_back_is_not_a_cut(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """A description read back without its trailing space teaches nothing; the next one is written whole."""
    server = serve(Router(PROFILES["spec"]))
    server.router.add(*FOREIGN)
    path = write(tmp_path, SPACED)
    assert cycle(capsys, server, path).second.code == 0
    write(tmp_path, SPACED + LONG)
    c = cycle(capsys, server, path)
    assert c.applied.code == 0, c.applied.out + c.applied.err
    assert c.second.code == 0, c.second.out
    assert quirks.Quirk.TRUNCATES_DESCRIPTIONS not in learned(server)
    assert learned(server).description_limit == 0
    held = {e.external_port: e.description for e in server.router.rows()}
    assert held[8080].endswith(" proxy ") and held[8081].endswith(" game a description well past 16")
    assert [r for r in snapshot(server) if r[0] == FOREIGN[0]] == [FOREIGN]


def test_a_router_that_cuts_is_still_learned_when_the_description_ends_in_a_space(
    tmp_path: str, capsys: pytest.CaptureFixture[str], serve: type[EmulatorServer]
) -> None:
    """The whitespace rule explains only lost whitespace: a real cut to 16 characters is still learned."""
    server = serve(Router(PROFILES["truncates-descriptions"]))
    c = cycle(capsys, server, write(tmp_path, SPACED + LONG))
    assert c.second.code == 0, c.second.out
    assert quirks.Quirk.TRUNCATES_DESCRIPTIONS in learned(server)
    assert learned(server).description_limit == 16
    assert all(len(e.description) == 16 for e in server.router.rows())


def _cache_path() -> str:
    path = Cache.from_env().path
    assert path is not None
    return path
