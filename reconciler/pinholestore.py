"""Which IPv6 pinholes an owner holds on a router: the router lists none and keeps no description, so
this inventory is the state. `pinholes.json` beside the cache, one section per router identity and
owner, each pinhole's key -> its name, UniqueID, lease, expiry and the router's boot when it was
opened or renewed (a router that restarted has lost it, whatever the expiry says); changed only by a
read-modify-write under the cache's lock and replaced atomically (as ownerstore's inventory is).

A lost record is not a lost pinhole: re-adding the identical pinhole answers the UniqueID the router
already gave it, so the next apply finds it again without a duplicate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from .boot import Boot
from .cache import Cache
from .models import HeldPinhole, Pinhole, PinholeKey, Protocol
from .ownerstore import InventoryError

FILE = "pinholes.json"
VERSION = 1


class PinholeStore:
    """The pinholes recorded for the router `router` (its identity) in `cache`'s directory."""

    def __init__(self, cache: Cache, router: str) -> None:
        if cache.directory is None:
            raise InventoryError("the pinhole inventory needs a cache directory to live in")
        if not router:
            raise InventoryError("pinholes are recorded per router, and this router has no identity")
        self.cache = cache
        self.router = router

    @property
    def path(self) -> str:
        assert self.cache.directory is not None
        return os.path.join(self.cache.directory, FILE)

    def held(self, owner: str) -> tuple[HeldPinhole, ...]:
        """Every pinhole `owner` holds here as recorded, in key order."""
        section = self._read()["routers"].get(self.router, {})
        records = section.get(owner, {}) if isinstance(section, dict) else {}
        out = [h for r in (records.values() if isinstance(records, dict) else ()) if (h := _held(r)) is not None]
        return tuple(sorted(out, key=lambda h: h.key))

    def others(self, owner: str, key: PinholeKey) -> tuple[str, ...]:
        """The other owners who recorded the same pinhole here: the router holds one pinhole for them
        all (an identical AddPinhole answers the same UniqueID), so one owner's close is not theirs."""
        section = self._read()["routers"].get(self.router, {})
        if not isinstance(section, dict):
            return ()
        return tuple(
            sorted(
                o for o, records in section.items() if o != owner and isinstance(records, dict) and str(key) in records
            )
        )

    def record(
        self,
        owner: str,
        name: str,
        pinhole: Pinhole,
        unique_id: int,
        expires: float,
        boot: Boot | None = None,
        *,
        granted: int = 0,
    ) -> None:
        """`pinhole` as asked; `granted` the seconds the router gave where it gave another lifetime."""
        entry: dict[str, Any] = {
            "name": name,
            "unique_id": unique_id,
            "lease": pinhole.lease,
            "granted": granted if granted and granted != pinhole.lease else 0,
            "expires": expires,
            "internal_client": pinhole.key.internal_client,
            "internal_port": pinhole.key.internal_port,
            "protocol": pinhole.key.protocol.value,
            "remote_host": pinhole.key.remote_host,
            "remote_port": pinhole.key.remote_port,
        }
        if boot is not None and boot.says():
            entry["boot"] = boot.to_record()
        self._change(lambda doc: self._owner(doc, owner).__setitem__(str(pinhole.key), entry))

    def release(self, owner: str, key: PinholeKey) -> None:
        def drop(doc: dict[str, Any]) -> None:
            records = self._owner(doc, owner)
            records.pop(str(key), None)
            if not records:
                del doc["routers"][self.router][owner]

        self._change(drop)

    def _owner(self, doc: dict[str, Any], owner: str) -> dict[str, Any]:
        section = doc["routers"].setdefault(self.router, {})
        records: dict[str, Any] = section.setdefault(owner, {})
        return records

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {"version": VERSION, "routers": {}}
        except (OSError, ValueError) as exc:
            raise InventoryError(f"{self.path}: cannot read the pinhole inventory: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("routers"), dict):
            raise InventoryError(f"{self.path}: not a portctl pinhole inventory of version {VERSION}")
        return doc

    def _change(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Re-read under the cache's lock, change, write atomically: another process's records stay."""
        try:
            assert self.cache.directory is not None
            os.makedirs(self.cache.directory, exist_ok=True)
            with self.cache.locked():
                doc = self._read()
                change(doc)
                self.cache.write_file(FILE, doc)
        except OSError as exc:
            raise InventoryError(f"{self.path}: cannot write the pinhole inventory: {exc}") from exc


def _held(record: object) -> HeldPinhole | None:
    """A record as written by `record`; None for anything else (it claims nothing)."""
    if not isinstance(record, dict):
        return None
    try:
        key = PinholeKey(
            str(record["internal_client"]),
            int(record["internal_port"]),
            Protocol(record["protocol"]),
            str(record["remote_host"]),
            int(record["remote_port"]),
        )
        return HeldPinhole(
            str(record["name"]),
            Pinhole(key, int(record["lease"])),
            int(record["unique_id"]),
            float(record["expires"]),
            granted=int(record.get("granted", 0)),  # records written before PCP pinholes have none: as asked
            boot=Boot.from_record(record.get("boot")),  # absent (older records) or unreadable: unknown
        )
    except (KeyError, TypeError, ValueError):
        return None
