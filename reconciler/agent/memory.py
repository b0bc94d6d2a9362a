"""The agent's drift memory: the rows it last saw converged, kept across restarts.

Drift is told from an approved edit by what the agent saw converged (diff.py, `applied`); held only in
memory, that is lost with the process, and a mapping edited in git while the agent was down looked
like drift to the next one. So it is kept in `applied.json` beside the cache, one entry per router
identity, owner and followed manifest file, each entry the rows by key and a stamp on the cache's
clock. Like the cache: the newest MAX_ENTRIES entries are kept, every change is a read-modify-write
under the cache's lock, re-reading the file so another agent's entries stay, replaced atomically.

It is a memory, not the state: a file that is missing, unreadable or of another shape reads as no
memory (the agent then writes a changed row once instead of taking it for drift), a row that does
not parse is a row not remembered, and failing to write never fails a pass. Each call says what
went wrong, in words, for the agent to log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..cache import MAX_ENTRIES, Cache
from ..models import MappingKey, PortMapping, Protocol

FILE = "applied.json"
VERSION = 1
# Rows per entry: far more than any router's table holds; a memory cut short only heals once.
MAX_ROWS = 4096
Rows = dict[MappingKey, PortMapping]


class DriftMemory:
    """The converged rows remembered in `cache`'s directory; with no directory, nothing is kept."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    @property
    def path(self) -> str | None:
        return os.path.join(self.cache.directory, FILE) if self.cache.directory else None

    def recall(self, router: str, owner: str, file: str) -> tuple[Rows, str]:
        """The rows remembered for `owner`'s manifest `file` on `router`, and why there are none
        where the file could not be read ("" when it could, or there is none)."""
        doc, problem = self._read()
        entry = doc["entries"].get(_name(router, owner, file))
        if not isinstance(entry, dict) or not isinstance(entry.get("rows"), list):
            return {}, problem
        rows = [row for record in entry["rows"][:MAX_ROWS] if (row := _row(record)) is not None]
        return {row.key: row for row in rows}, problem

    def keep(self, router: str, owner: str, file: str, rows: Mapping[MappingKey, PortMapping]) -> str:
        """Remember `rows` for `owner`'s manifest `file` on `router`; returns why it could not ("" if it did)."""
        if self.path is None:
            return ""
        assert self.cache.directory is not None
        entry = {
            "router": router,
            "owner": owner,
            "file": file,
            "updated": self.cache.clock(),
            "rows": [_record(row) for _, row in sorted(rows.items())[:MAX_ROWS]],
        }
        try:
            os.makedirs(self.cache.directory, exist_ok=True)
            with self.cache.locked():
                doc, _ = self._read()  # unreadable: written afresh, as no memory
                entries = {**doc["entries"], _name(router, owner, file): entry}
                newest = sorted(entries.items(), key=lambda kv: -_stamp(kv[1]))[:MAX_ENTRIES]
                self.cache.write_file(FILE, {"version": VERSION, "entries": dict(newest)})
        except OSError as exc:
            return f"could not write the drift memory {self.path}: {exc}"
        return ""

    def _read(self) -> tuple[dict[str, Any], str]:
        empty: dict[str, Any] = {"entries": {}}
        if self.path is None:
            return empty, ""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return empty, ""
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            return empty, f"the drift memory {self.path} is unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("entries"), dict):
            return empty, f"the drift memory {self.path} is not a portctl drift memory of version {VERSION}"
        return {"entries": {str(k): v for k, v in doc["entries"].items() if isinstance(v, dict)}}, ""


def _name(router: str, owner: str, file: str) -> str:
    # A JSON list: no router identity, owner or path can make two entries share a name.
    return json.dumps([router, owner, file])


def _stamp(entry: object) -> float:
    value = entry.get("updated") if isinstance(entry, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _record(row: PortMapping) -> dict[str, Any]:
    return {
        "external_port": row.key.external_port,
        "protocol": row.key.protocol.value,
        "internal_client": row.internal_client,
        "internal_port": row.internal_port,
        "description": row.description,
        "lease": row.lease,
        "enabled": row.enabled,
        "remote_host": row.remote_host,
    }


def _row(record: object) -> PortMapping | None:
    """A row as `_record` wrote it; None for anything else (it is not remembered)."""
    if not isinstance(record, dict):
        return None
    try:
        fields = (
            record["external_port"],
            record["internal_port"],
            record["lease"],
            record["internal_client"],
            record["description"],
            record["remote_host"],
            record["enabled"],
        )
        protocol = Protocol(record["protocol"])
    except (KeyError, TypeError, ValueError):
        return None
    external, internal, lease, client, description, remote, enabled = fields
    numbers_ok = all(isinstance(n, int) and not isinstance(n, bool) for n in (external, internal, lease))
    if not numbers_ok or not all(isinstance(t, str) for t in (client, description, remote)):
        return None
    if not isinstance(enabled, bool):
        return None
    return PortMapping(MappingKey(external, protocol), client, internal, description, lease, enabled, remote)
