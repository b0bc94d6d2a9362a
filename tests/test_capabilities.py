"""Backend capabilities: each backend declares what its protocol can do, and callers ask instead of
assuming UPnP (events, renewal timing, reading back what was written)."""

from __future__ import annotations

import io
from dataclasses import replace

from reconciler import api, manifest
from reconciler.agent.config import AgentConfig
from reconciler.agent.events import Events
from reconciler.agent.logs import JsonLog
from reconciler.apply import apply
from reconciler.backends.base import Backend, Capabilities
from reconciler.backends.upnp import UpnpBackend
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer
from reconciler.errors import RouterError
from reconciler.models import MAX_LEASE, Action, MappingKey, PortMapping, Protocol, RouterInfo
from reconciler.quirks import Learned
from tests.agenthelp import ROUTER_TIMEOUT, Clock

DAY = 86400
WEB = """\
apiVersion: portctl/v1
owner: pieces
mappings:
  - {name: web, external_port: 8080, internal_client: 192.168.1.20"""
NO_LISTING = Capabilities(
    can_list=False, can_describe=False, picks_external_port=True, sends_events=False, longest_lease=DAY
)


class Unlisted(Backend):
    """A router in memory whose protocol cannot list its table (as NAT-PMP and PCP cannot)."""

    def __init__(self) -> None:
        self.info = RouterInfo("pcp", "router-1", "192.0.2.1")
        self.capabilities = NO_LISTING
        self.learned = Learned()
        self.rows: dict[MappingKey, PortMapping] = {}

    def list_mappings(self) -> list[PortMapping]:
        raise RouterError("this protocol cannot list a table")

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        return self.rows.get(key)

    def add_mapping(self, mapping: PortMapping, window: object = None) -> None:
        self.rows[mapping.key] = mapping

    def delete_mapping(self, mapping: PortMapping) -> None:
        self.rows.pop(mapping.key, None)

    def local_address(self) -> str:
        return "192.168.1.20"

    def external_address(self) -> str:
        return "203.0.113.7"


def test_the_upnp_backend_declares_what_igd_can_do(emulator: EmulatorServer) -> None:
    backend = api.connect(emulator.url, Cache.from_env())
    assert isinstance(backend, UpnpBackend)
    try:
        assert backend.capabilities == Capabilities(
            can_list=True, can_describe=True, picks_external_port=False, sends_events=True, longest_lease=MAX_LEASE
        )
        assert backend.info.protocol == "upnp-igd2" and backend.info.identity == emulator.udn
        assert backend.info.address == emulator.url
    finally:
        backend.close()


def test_the_agent_subscribes_to_events_only_when_the_backend_sends_them(emulator: EmulatorServer) -> None:
    """A backend that says it sends no events is polled, even if it has an event URL."""
    backend = api.connect(emulator.url, Cache.from_env(), timeout=ROUTER_TIMEOUT)
    assert isinstance(backend, UpnpBackend) and backend.event_url()
    backend.capabilities = replace(backend.capabilities, sends_events=False)
    config = AgentConfig(manifest="unused.yaml", router=emulator.url, timeout=ROUTER_TIMEOUT)
    events = Events(config, JsonLog(io.StringIO()), lambda: None, lambda: None, Clock())
    try:
        events.attach(backend)
        assert events.listener is None and events.url == ""
    finally:
        events.close()
        backend.close()


def test_apply_reads_back_row_by_row_on_a_router_that_cannot_list() -> None:
    """Verified with get_mapping where there is no table to list: the report is done, not unverified."""
    backend = Unlisted()
    m = manifest.parse(WEB + ", lease: 1h}\n", "m.yaml")
    plan = api.plan(m, api.Facts(backend, []))
    assert [c.action for c in plan.changes] == [Action.ADD]
    report = apply(plan, backend)
    assert report.ok and report.unverified == ""
    assert report.table is not None and [r.key for r in report.table] == [MappingKey(8080, Protocol.TCP)]


def test_a_permanent_lease_is_renewed_against_the_backends_longest_lease() -> None:
    """Two days left of a permanent mapping: renewed where permanent means 7 days, not where it means 3."""
    m = manifest.parse(WEB + "}\n", "m.yaml")
    added = api.plan(m, api.Facts(Unlisted(), [])).changes[0].after
    assert added is not None
    row = replace(added, lease=2 * DAY)
    seven = Unlisted()
    seven.capabilities = replace(NO_LISTING, longest_lease=MAX_LEASE)
    three = Unlisted()
    three.capabilities = replace(NO_LISTING, longest_lease=3 * DAY)
    assert [c.action for c in api.plan(m, api.Facts(seven, [row])).changes] == [Action.RENEW]
    assert api.plan(m, api.Facts(three, [row])).changes == ()
