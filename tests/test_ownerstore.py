"""The inventory ownership store: what a protocol that cannot describe its rows knows it owns."""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import pytest

from reconciler import api, diff
from reconciler.apply import apply
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer
from reconciler.models import Action, DesiredMapping, Manifest, MappingKey, PortMapping, Protocol
from reconciler.ownership import Claim
from reconciler.ownerstore import INVENTORY_FILE, InventoryError, InventoryStore, TagStore, for_router, identity

WEB = MappingKey(8080, Protocol.TCP)
ROW = PortMapping(WEB, "192.168.1.20", 80, "web nginx")
ROUTER = "uuid:router-a"


def store(directory: str, router: str = ROUTER) -> InventoryStore:
    return InventoryStore(Cache(directory), router)


def test_a_recorded_row_is_claimed_and_a_released_one_is_not(tmp_path: str) -> None:
    """record makes the row the owner's, with its name and protection; release gives it up."""
    inventory = store(str(tmp_path))
    assert inventory.claim("homelab", WEB, ROW) is None
    inventory.record("homelab", WEB, ROW, "web", protect=True)
    assert inventory.claim("homelab", WEB, ROW) == Claim("web", True, here=True)
    assert inventory.claim("neighbour", WEB, ROW) is None  # another owner's record is not this one's
    inventory.release("homelab", WEB)
    assert inventory.claim("homelab", WEB, ROW) is None


def test_a_row_replaced_by_someone_else_is_not_claimed(tmp_path: str) -> None:
    """A row at a recorded key that points at another client or port than was written is foreign."""
    inventory = store(str(tmp_path))
    inventory.record("homelab", WEB, ROW, "web")
    elsewhere = PortMapping(WEB, "192.168.1.99", 80, "theirs")
    other_port = PortMapping(WEB, "192.168.1.20", 81, "theirs")
    assert [inventory.claim("homelab", WEB, r) for r in (elsewhere, other_port)] == [None, None]


def test_records_survive_a_restart(tmp_path: str) -> None:
    """A store made afresh on the same directory (the next run) claims what an earlier one recorded."""
    store(str(tmp_path)).record("homelab", WEB, ROW, "web")
    assert store(str(tmp_path)).claim("homelab", WEB, ROW) == Claim("web", False, here=True)
    assert store(str(tmp_path)).owned("homelab") == {WEB: Claim("web", False, here=True)}


def test_two_routers_do_not_mix(tmp_path: str) -> None:
    """A record for one router is not claimed on another, and releasing on one leaves the other's."""
    a, b = store(str(tmp_path), "uuid:router-a"), store(str(tmp_path), "uuid:router-b")
    a.record("homelab", WEB, ROW, "web")
    assert b.claim("homelab", WEB, ROW) is None
    b.record("homelab", WEB, ROW, "web-b")
    b.release("homelab", WEB)
    assert a.claim("homelab", WEB, ROW) == Claim("web", False, here=True)
    assert b.owned("homelab") == {}


def _record_many(directory: str, owner: str, count: int, start: Any) -> None:
    inventory = store(directory)
    start.wait(60)  # both processes begin recording together, so their read-modify-writes overlap
    for port in range(count):
        key = MappingKey(10000 + port, Protocol.UDP)
        inventory.record(owner, key, PortMapping(key, "192.168.1.20", port + 1, ""), f"m{port}")


def test_two_processes_recording_at_once_lose_nothing(tmp_path: str) -> None:
    """Two processes recording 150 rows each at the same time leave all 300 in the file."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [
        context.Process(target=_record_many, args=(str(tmp_path), owner, 150, start)) for owner in ("one", "two")
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    inventory = store(str(tmp_path))
    assert {owner: len(inventory.owned(owner)) for owner in ("one", "two")} == {"one": 150, "two": 150}


def test_an_unreadable_inventory_is_an_error_and_is_not_overwritten(tmp_path: str) -> None:
    """A corrupt inventory raises InventoryError naming the file, and recording leaves it as it was."""
    path = os.path.join(tmp_path, INVENTORY_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{not json")
    inventory = store(str(tmp_path))
    with pytest.raises(InventoryError, match=INVENTORY_FILE):
        inventory.claim("homelab", WEB, ROW)
    with pytest.raises(InventoryError, match=INVENTORY_FILE):
        inventory.record("homelab", WEB, ROW, "web")
    with open(path, encoding="utf-8") as f:
        assert f.read() == "{not json"


def test_the_file_is_keyed_by_router_identity(tmp_path: str) -> None:
    """The inventory file holds one section per router identity, each with its owners' records."""
    store(str(tmp_path), "uuid:router-a").record("homelab", WEB, ROW, "web")
    with open(os.path.join(tmp_path, INVENTORY_FILE), encoding="utf-8") as f:
        doc = json.load(f)
    assert doc == {
        "version": 1,
        "routers": {
            "uuid:router-a": {
                "homelab": {
                    "8080/tcp": {
                        "name": "web",
                        "protected": False,
                        "internal_client": "192.168.1.20",
                        "internal_port": 80,
                    }
                }
            }
        },
    }


def test_the_planner_asks_the_store_it_is_given(tmp_path: str) -> None:
    """With an inventory, the planner prunes the recorded row, leaves the unrecorded one alone, and
    writes an untagged label naming owner and mapping (what a PCP backend derives its nonce from)."""
    inventory = store(str(tmp_path))
    inventory.record("homelab", WEB, ROW, "web")
    stranger = PortMapping(MappingKey(9090, Protocol.TCP), "192.168.1.30", 9090, "game")
    ssh = DesiredMapping("ssh", MappingKey(2222, Protocol.TCP), "192.168.1.20", 22, 3600)
    plan = diff.diff(Manifest("m.yaml", "homelab", (ssh,)), [ROW, stranger], store=inventory)
    assert [(c.action, c.key) for c in plan.changes] == [(Action.REMOVE, WEB), (Action.ADD, ssh.key)]
    assert plan.foreign == (stranger,)
    assert [c.after.description for c in plan.changes if c.after] == ["homelab/ssh"]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("homelab/ssh", ("homelab", "ssh")),
        ("homelab/ssh the ssh server", ("homelab", "ssh")),
        ("ssh", None),
        ("ssh the/ssh server", None),
        ("/ssh", None),
        ("homelab/", None),
        ("pc:abc/def", None),
    ],
)
def test_an_inventory_label_gives_back_its_owner_and_name(label: str, expected: tuple[str, str] | None) -> None:
    """Owner and name come back only from a label of the inventory's OWNER/NAME form."""
    assert identity(label) == expected


def test_a_router_that_describes_gets_the_tag_store(tmp_path: str) -> None:
    """for_router picks the description tag where the router keeps descriptions, else the inventory."""
    assert isinstance(for_router(True, Cache(str(tmp_path)), ROUTER), TagStore)
    assert isinstance(for_router(False, Cache(str(tmp_path)), ROUTER), InventoryStore)
    with pytest.raises(InventoryError):
        for_router(False, Cache(None), ROUTER)


def test_api_plans_and_destroys_with_the_store_it_is_given(tmp_path: str, emulator: EmulatorServer) -> None:
    """api.plan and api.destroy_plan claim by the store handed in: an inventory's row is removed
    by destroy, and an untagged row the inventory does not hold is left foreign."""
    cache = Cache(str(tmp_path))
    emulator.router.add(8080, "TCP", "127.0.0.1", 80, "homelab/web nginx")  # as the inventory labels it
    emulator.router.add(9090, "TCP", "127.0.0.1", 9090, "game")
    inventory = InventoryStore(cache, emulator.udn)
    inventory.record("homelab", WEB, PortMapping(WEB, "127.0.0.1", 80, "homelab/web nginx"), "web")
    web = DesiredMapping("web", WEB, "127.0.0.1", 80, 0, description="nginx")
    m = Manifest("m.yaml", "homelab", (web,))
    with api.session(emulator.url, cache) as backend:
        facts = api.read(backend)
        assert api.plan(m, facts, store=inventory).changes == ()  # the row is ours, as declared
        gone = api.destroy_plan(m, facts, store=inventory)
        tagged = api.destroy_plan(m, facts)
    assert [(c.action, c.key) for c in gone.changes] == [(Action.REMOVE, WEB)]
    assert [m.key.external_port for m in gone.foreign] == [9090]
    assert tagged.changes == ()  # by the description tag, neither row is this owner's


def test_apply_keeps_the_inventory_it_planned_with(tmp_path: str, emulator: EmulatorServer) -> None:
    """apply records what it wrote (protection included) and releases what it removed, so the next
    plan knows its rows without a tag: nothing to do, then a protected row kept and another pruned."""
    cache = Cache(str(tmp_path))
    inventory = InventoryStore(cache, emulator.udn)
    web = DesiredMapping("web", WEB, "127.0.0.1", 80, 0, description="nginx", protect=True)
    ssh = DesiredMapping("ssh", MappingKey(2222, Protocol.TCP), "127.0.0.1", 2022, 0)
    game = DesiredMapping("game", MappingKey(27015, Protocol.UDP), "127.0.0.1", 27015, 0)
    with api.session(emulator.url, cache) as backend:
        plan = api.plan(Manifest("m.yaml", "homelab", (web, ssh, game)), api.read(backend), store=inventory)
        assert apply(plan, backend, store=inventory).ok
        assert inventory.owned("homelab") == {
            WEB: Claim("web", True, here=True),
            ssh.key: Claim("ssh", False, here=True),
            game.key: Claim("game", False, here=True),
        }
        assert (
            api.plan(Manifest("m.yaml", "homelab", (web, ssh, game)), api.read(backend), store=inventory).changes == ()
        )
        pruned = api.plan(Manifest("m.yaml", "homelab", (game,)), api.read(backend), store=inventory)
        assert [(c.action, c.key) for c in pruned.changes] == [(Action.REMOVE, ssh.key)]
        assert [m.key for m in pruned.kept] == [WEB]
        assert apply(pruned, backend, store=inventory).ok
    assert inventory.owned("homelab") == {WEB: Claim("web", True, here=True), game.key: Claim("game", False, here=True)}
    assert {e.external_port for e in emulator.router.rows()} == {8080, 27015}
