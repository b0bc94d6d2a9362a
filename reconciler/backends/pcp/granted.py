"""What a PCP or NAT-PMP router granted this host, kept beside the cache: the table neither protocol can read.

One record per router identity in the cache file's `pcp_granted` section: each granted row (the
row as asked, the lifetime granted, the nonce it was made with, when it expires on the wall clock)
and the last epoch each protocol answered with, so a later run can tell that the router lost its
state. Every change is the cache's read-modify-write under its lock, replaced atomically; unlike the
cache's other sections a failed write is an error (NoRecords), since a grant not kept is a mapping
portctl would no longer see. A record lost anyway costs little: the plan adds the mapping again,
and the same nonce renews the router's mapping instead of making a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...cache import Cache
from ...models import MappingKey, PortMapping, Protocol
from .errors import NoRecords

SECTION = "pcp_granted"


@dataclass(frozen=True)
class Grant:
    """A mapping the router granted: `row.lease` is the lifetime it granted, `expires` wall-clock seconds."""

    row: PortMapping
    nonce: bytes  # b"" for NAT-PMP, which has none
    expires: float


@dataclass(frozen=True)
class Epoch:
    value: int
    at: float  # the client's wall clock when the answer carrying it arrived


class Granted:
    """The records of one router (`router`: its identity) in `cache`."""

    def __init__(self, cache: Cache, router: str) -> None:
        if cache.directory is None:
            raise NoRecords("PCP and NAT-PMP need a cache directory to keep what the router granted")
        self.cache = cache
        self.router = router

    def grants(self) -> dict[MappingKey, Grant]:
        out = {}
        for text, raw in self._record().get("rows", {}).items():
            grant = _grant(text, raw)
            if grant is not None:
                out[grant.row.key] = grant
        return out

    def epoch(self, protocol: str) -> Epoch | None:
        raw = self._record().get("epochs", {}).get(protocol)
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int | float) for v in raw)):
            return None
        return Epoch(int(raw[0]), float(raw[1]))

    def put(self, grant: Grant) -> None:
        row = grant.row
        entry = {
            "internal_client": row.internal_client,
            "internal_port": row.internal_port,
            "description": row.description,
            "lifetime": row.lease,
            "nonce": grant.nonce.hex(),
            "expires": grant.expires,
        }
        self._change(lambda record: record.setdefault("rows", {}).__setitem__(str(row.key), entry))

    def drop(self, key: MappingKey) -> None:
        self._change(lambda record: record.setdefault("rows", {}).pop(str(key), None))

    def saw(self, protocol: str, epoch: Epoch, *, lost: bool) -> None:
        """Keep the epoch `protocol` answered with; when `lost`, the router forgot every grant: void them."""

        def change(record: dict[str, Any]) -> None:
            record.setdefault("epochs", {})[protocol] = [epoch.value, epoch.at]
            if lost:
                record["rows"] = {}

        self._change(change)

    def ceiling(self) -> int:
        """The shortest lifetime the router granted where more was asked (0: it never shortened one)."""
        value = self._record().get("limits", {}).get("ceiling")
        return value if isinstance(value, int) and value > 0 else 0

    def shortened(self, lifetime: int) -> None:
        """The router granted only `lifetime` where more was asked: that is the longest it grants."""

        def change(record: dict[str, Any]) -> None:
            limits = record.setdefault("limits", {})
            held = limits.get("ceiling")
            limits["ceiling"] = min(held, lifetime) if isinstance(held, int) and held > 0 else lifetime

        self._change(change)

    def external(self) -> str:
        """The external address the router last assigned a mapping ("" before any)."""
        value = self._record().get("limits", {}).get("external")
        return value if isinstance(value, str) else ""

    def assigned(self, address: str) -> None:
        """The router assigned `address` to a mapping: what its external address is taken to be where
        nothing else tells (a PCP-only gateway)."""
        self._change(lambda record: record.setdefault("limits", {}).__setitem__("external", address))

    def _record(self) -> dict[str, Any]:
        record = self.cache.read().get(SECTION, {}).get(self.router, {})
        return {k: v for k, v in record.items() if isinstance(v, dict)}

    def _change(self, change: Any) -> None:
        def update(doc: dict[str, dict[str, Any]]) -> bool:
            section = doc.setdefault(SECTION, {})
            record = section.get(self.router)
            if not isinstance(record, dict):
                record = section[self.router] = {}
            change(record)
            record["updated"] = self.cache.clock()
            return True

        try:
            self.cache.update(update, strict=True)
        except OSError as exc:
            raise NoRecords(f"{self.cache.path}: cannot keep what the router granted: {exc}") from exc


def _grant(text: str, raw: object) -> Grant | None:
    """A stored row, or None when it is not one (the file is a cache: skip what cannot be read)."""
    port, _, protocol = text.partition("/")
    if not isinstance(raw, dict) or not port.isdigit() or protocol.upper() not in Protocol.__members__:
        return None
    try:
        row = PortMapping(
            MappingKey(int(port), Protocol(protocol.upper())),
            str(raw["internal_client"]),
            int(raw["internal_port"]),
            str(raw["description"]),
            int(raw["lifetime"]),
        )
        return Grant(row, bytes.fromhex(str(raw["nonce"])), float(raw["expires"]))
    except (KeyError, TypeError, ValueError):
        return None
