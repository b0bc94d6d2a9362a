"""Which ownership store a router gets, chosen by what its backend can do, and everything that reads
ownership asking that store: the planner, the admission gate, the plan's text, apply and the agent.

A router that cannot keep descriptions (as PCP and NAT-PMP cannot) is owned through a local inventory;
protection, pruning and the agent's passes must then work without a single tag on the router.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from typing import Any

import pytest

from reconciler import admission, api, manifest, render
from reconciler.agent.config import AgentConfig
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.apply import apply
from reconciler.backends.base import Backend, Capabilities
from reconciler.cache import Cache
from reconciler.models import MAX_LEASE, Action, Change, MappingKey, Plan, PortMapping, Protocol, RouterInfo
from reconciler.ownerstore import InventoryError, InventoryStore, TagStore
from reconciler.quirks import Learned, Quirk
from tests.agenthelp import Clock

DAY = 86400
WEB, SSH = MappingKey(8080, Protocol.TCP), MappingKey(2222, Protocol.TCP)
GAME = MappingKey(27015, Protocol.UDP)  # another app's
UNDESCRIBED = Capabilities(
    can_list=True, can_describe=False, picks_external_port=False, sends_events=False, longest_lease=DAY
)
MANIFEST = """\
apiVersion: portctl/v1
owner: homelab
defaults: {{lease: 1h}}
prune: true
mappings:
{rows}"""
ROWS = {
    "web": "  - {name: web, external_port: 8080, internal_port: 80, internal_client: 192.168.1.20, protect: true}\n",
    "ssh": "  - {name: ssh, external_port: 2222, internal_port: 2022, internal_client: 192.168.1.20}\n",
}


def manifest_of(*names: str) -> str:
    return MANIFEST.format(rows="".join(ROWS[n] for n in names) or "  []\n")


class Undescribed(Backend):
    """A router in memory that lists its table but keeps no descriptions: each row reads back with
    the router's own text, as miniupnpd lists what PCP made ("PCP MAP ...")."""

    def __init__(self) -> None:
        self.info = RouterInfo("pcp", "router-7", "192.0.2.1")
        self.capabilities = UNDESCRIBED
        self.learned = Learned()
        self.rows: dict[MappingKey, PortMapping] = {}
        self.writes = 0

    def list_mappings(self) -> list[PortMapping]:
        return list(self.rows.values())

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        return self.rows.get(key)

    def add_mapping(self, mapping: PortMapping, window: object = None) -> None:
        self.writes += 1
        self.rows[mapping.key] = replace(mapping, description=f"PCP MAP {mapping.key.external_port}")

    def delete_mapping(self, mapping: PortMapping) -> None:
        self.writes += 1
        self.rows.pop(mapping.key, None)

    def local_address(self) -> str:
        return "192.168.1.20"

    def external_address(self) -> str:
        return "203.0.113.7"


def with_foreign_app() -> Undescribed:
    backend = Undescribed()
    backend.rows[GAME] = PortMapping(GAME, "192.168.1.30", 27015, "PCP MAP 27015")
    return backend


def plan_of(text: str, facts: api.Facts) -> Plan:
    return api.plan(manifest.parse(text, "mappings.yaml"), facts)


def test_the_store_follows_the_backends_capabilities(tmp_path: str) -> None:
    """A router that keeps descriptions is owned by the tag; one that cannot, by its inventory; and
    without a cache directory to keep one in, reading it is an error, never "nothing is ours"."""
    assert isinstance(api.read(Undescribed(), Cache(str(tmp_path))).store, InventoryStore)
    described = Undescribed()
    described.capabilities = replace(UNDESCRIBED, can_describe=True)
    assert isinstance(api.read(described, Cache(str(tmp_path))).store, TagStore)
    with pytest.raises(InventoryError, match="cache directory"):
        api.read(Undescribed(), Cache(None))


def test_an_undescribed_router_is_owned_and_pruned_through_the_inventory(tmp_path: str) -> None:
    """Applied, then nothing to do; a mapping dropped from the manifest is pruned; another app's row
    stays foreign and is never touched, though no row on the router carries a tag."""
    cache, backend = Cache(str(tmp_path)), with_foreign_app()
    foreign = backend.rows[GAME]
    facts = api.read(backend, cache)
    first = plan_of(manifest_of("web", "ssh"), facts)
    assert [(c.action, c.key) for c in first.changes] == [(Action.ADD, SSH), (Action.ADD, WEB)]
    assert apply(first, backend, store=facts.store).ok

    again = plan_of(manifest_of("web", "ssh"), api.read(backend, cache))
    assert again.changes == () and again.foreign == (foreign,)
    pruned = plan_of(manifest_of("web"), api.read(backend, cache))
    assert [(c.action, c.key) for c in pruned.changes] == [(Action.REMOVE, SSH)]
    assert apply(pruned, backend, store=api.read(backend, cache).store).ok
    assert set(backend.rows) == {WEB, GAME} and backend.rows[GAME] == foreign


def test_protection_recorded_in_the_inventory_keeps_the_row_and_the_plan_says_why(tmp_path: str) -> None:
    """No description can carry the protected mark here: the plan, its text, destroy and the
    admission gate learn it from the inventory."""
    cache, backend = Cache(str(tmp_path)), with_foreign_app()
    facts = api.read(backend, cache)
    assert apply(plan_of(manifest_of("web", "ssh"), facts), backend, store=facts.store).ok

    emptied = plan_of(manifest_of("ssh"), api.read(backend, cache))
    assert emptied.changes == () and emptied.protected == (WEB,)
    assert [m.key for m in emptied.kept] == [WEB]
    text = render.plan_text(emptied, render.Style(False))
    assert "kept because it is protected:\n    8080/tcp" in text

    m = manifest.parse(manifest_of("web", "ssh"), "mappings.yaml")
    destroyed = api.destroy_plan(m, api.read(backend, cache))
    assert [(c.action, c.key) for c in destroyed.changes] == [(Action.REMOVE, SSH)]


def test_the_admission_gate_refuses_removing_what_the_store_protects() -> None:
    """A removal the store marks protected is refused whatever the row's description says."""
    row = PortMapping(WEB, "192.168.1.20", 80, "PCP MAP 8080")
    removal = Change(Action.REMOVE, "web", WEB, row, None, "no longer declared", protect=True)
    plan = Plan(owner="homelab", changes=(removal,), foreign=())
    refusals = admission.admit(plan, manifest.parse(manifest_of("ssh"), "mappings.yaml"))
    assert [(r.kind, r.key) for r in refusals] == [("protected", WEB)]


def test_a_finite_only_router_is_asked_for_its_own_longest_lease(tmp_path: str) -> None:
    """A permanent mapping on a router that refuses permanent leases becomes the longest lease its
    backend declares (a day here), not IGD's 7 days, and the plan says so."""
    backend = Undescribed()
    backend.learned.learn(Quirk.FINITE_ONLY, "AddPortMapping answered 725", now=0, proven=True)
    text = manifest_of("ssh").replace("{lease: 1h}", "{lease: permanent}")
    (add,) = plan_of(text, api.read(backend, Cache(str(tmp_path)))).changes
    assert add.after is not None and add.after.lease == DAY != MAX_LEASE
    assert [(a.field, a.asked, a.written) for a in add.adapted] == [("lease", 0, DAY)]


def test_the_agent_owns_an_undescribed_router_through_the_inventory(tmp_path: str) -> None:
    """The agent's passes ask the same store: the first writes, the next finds everything in place
    and writes nothing, and another app's row is left as it was."""
    path = os.path.join(tmp_path, "mappings.yaml")
    with open(path, "w") as f:
        f.write(manifest_of("web", "ssh"))
    backend, clock = with_foreign_app(), Clock()
    foreign = backend.rows[GAME]

    def connect(url: str | None, cache: Cache, **_: Any) -> Backend:
        return backend

    config = AgentConfig(manifest=path, router="http://192.0.2.1/", events=False, settle=0)
    agent = Agent(
        config, log=JsonLog(io.StringIO()), clock=clock, wall=clock, cache=Cache(str(tmp_path)), connect=connect
    )
    agent.step()
    assert set(backend.rows) == {WEB, SSH, GAME} and backend.writes == 2
    clock.advance(config.interval)
    agent.step()
    assert backend.writes == 2 and backend.rows[GAME] == foreign
    assert {e.mapping for e in agent.status.inventory} == {str(WEB), str(SSH)}
