"""The agent's drift memory (reconciler/agent/memory.py): the rows last seen converged, kept beside the cache."""

from __future__ import annotations

import json
import os
from typing import Any

from reconciler.agent import memory
from reconciler.agent.memory import DriftMemory
from reconciler.cache import MAX_ENTRIES, Cache
from reconciler.models import MappingKey, PortMapping, Protocol
from tests.agenthelp import Clock

WEB = PortMapping(MappingKey(8080, Protocol.TCP), "192.168.1.10", 80, "portctl:homelab/web", 3600, True, "203.0.113.9")
SSH = PortMapping(MappingKey(2222, Protocol.UDP), "192.168.1.11", 22, "portctl:homelab/ssh", 0, False, "")


def _memory(tmp_path: Any, clock: Clock | None = None) -> DriftMemory:
    return DriftMemory(Cache(str(tmp_path), clock=clock or Clock()))


def test_rows_kept_are_recalled_per_router_owner_and_file(tmp_path: Any) -> None:
    """What is kept for one router, owner and file comes back whole, and only for those three."""
    kept = _memory(tmp_path)
    assert kept.keep("uuid:a", "homelab", "mappings.yaml", {WEB.key: WEB, SSH.key: SSH}) == ""
    again = _memory(tmp_path)  # another process
    assert again.recall("uuid:a", "homelab", "mappings.yaml") == ({WEB.key: WEB, SSH.key: SSH}, "")
    assert again.recall("uuid:b", "homelab", "mappings.yaml") == ({}, "")
    assert again.recall("uuid:a", "games", "mappings.yaml") == ({}, "")
    assert again.recall("uuid:a", "homelab", "games.yaml") == ({}, "")


def test_another_process_entry_is_kept(tmp_path: Any) -> None:
    """Two agents sharing the cache each keep their own entry: a write re-reads the file under the lock."""
    one, two = _memory(tmp_path), _memory(tmp_path)
    one.recall("uuid:a", "homelab", "m.yaml")
    two.recall("uuid:a", "games", "g.yaml")
    one.keep("uuid:a", "homelab", "m.yaml", {WEB.key: WEB})
    two.keep("uuid:a", "games", "g.yaml", {SSH.key: SSH})
    assert one.recall("uuid:a", "homelab", "m.yaml")[0] == {WEB.key: WEB}
    assert one.recall("uuid:a", "games", "g.yaml")[0] == {SSH.key: SSH}


def test_the_memory_keeps_the_newest_entries_only(tmp_path: Any) -> None:
    """Past MAX_ENTRIES router, owner and file entries, the least recently written go first."""
    clock = Clock()
    kept = _memory(tmp_path, clock)
    for n in range(MAX_ENTRIES + 3):
        clock.advance(1)
        kept.keep(f"uuid:{n}", "homelab", "m.yaml", {WEB.key: WEB})
    remembered = [n for n in range(MAX_ENTRIES + 3) if kept.recall(f"uuid:{n}", "homelab", "m.yaml")[0]]
    assert remembered == list(range(3, MAX_ENTRIES + 3))


def test_a_row_that_does_not_parse_is_not_remembered(tmp_path: Any) -> None:
    """One bad row in an entry is forgotten alone; the others are recalled."""
    kept = _memory(tmp_path)
    kept.keep("uuid:a", "homelab", "m.yaml", {WEB.key: WEB, SSH.key: SSH})
    path = os.path.join(str(tmp_path), memory.FILE)
    with open(path) as f:
        doc = json.load(f)
    (entry,) = doc["entries"].values()
    entry["rows"][0]["internal_port"] = "22"
    entry["rows"].append({"protocol": "SCTP"})
    with open(path, "w") as f:
        json.dump(doc, f)
    assert kept.recall("uuid:a", "homelab", "m.yaml") == ({WEB.key: WEB}, "")


def test_a_memory_that_cannot_be_written_says_so(tmp_path: Any) -> None:
    """A cache directory that cannot be made is a problem in words, not an exception; nothing is recalled."""
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    kept = DriftMemory(Cache(str(blocked / "cache"), clock=Clock()))
    problem = kept.keep("uuid:a", "homelab", "m.yaml", {WEB.key: WEB})
    assert problem.startswith(f"could not write the drift memory {blocked / 'cache' / memory.FILE}: ")
    assert kept.recall("uuid:a", "homelab", "m.yaml")[0] == {}


def test_without_a_cache_directory_nothing_is_kept(tmp_path: Any) -> None:
    """Cache(None) keeps nothing: keeping is a no-op and recalling finds nothing."""
    kept = DriftMemory(Cache(None))
    assert kept.keep("uuid:a", "homelab", "m.yaml", {WEB.key: WEB}) == ""
    assert kept.recall("uuid:a", "homelab", "m.yaml") == ({}, "")
