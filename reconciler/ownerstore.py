"""How a row is known to be ours, whatever the protocol: the OwnershipStore interface and its two kinds.

- TagStore: the router's description carries the owner's tag (ownership.py). The router is the
  state; recording and releasing are the writes themselves. UPnP IGD uses it.
- InventoryStore: for protocols whose rows carry no description (PCP, NAT-PMP) or whose table
  cannot be listed, a local inventory is the state: a JSON file beside the cache, one section per
  router identity, changed only by a read-modify-write under the cache's lock and replaced
  atomically, so two processes recording at once lose nothing and a reader never sees a torn file.

The planner asks a store, never a format: `claim` says whether a row is this owner's, `label` what
description to write, and apply tells it what was written (`record`) or deleted (`release`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection
from typing import Any, Protocol

from . import madethrough, models, ownership
from .cache import Cache
from .errors import PortctlError
from .models import MappingKey, PortMapping
from .ownership import Claim

INVENTORY_FILE = "inventory.json"
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")  # the schema's patterns
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,23}")
INVENTORY_VERSION = 1


class InventoryError(PortctlError):
    """The inventory file cannot be read or written: what this host owns is not known for certain."""


class OwnershipStore(Protocol):
    """Where a protocol keeps which rows an owner holds."""

    def label(self, owner: str, key: MappingKey, name: str, description: str = "", *, protect: bool = False) -> str:
        """The description to write on the router for `owner`'s mapping `name` at `key`."""
        ...

    def claim(
        self, owner: str, key: MappingKey, row: PortMapping, names: Collection[str] = (), cut: int = 0
    ) -> Claim | None:
        """What is known of `row` if it is `owner`'s; None if it is not ours.

        `names` are the names the manifest may place at `key`; `cut` the length the router is known to
        cut descriptions to (0: not known)."""
        ...

    def record(self, owner: str, key: MappingKey, row: PortMapping, name: str, *, protect: bool = False) -> None:
        """Note that `owner` now holds `row` at `key`, as mapping `name`."""
        ...

    def release(self, owner: str, key: MappingKey) -> None:
        """Note that `owner` no longer holds anything at `key`."""
        ...

    def forget_absent(self, owner: str, present: Collection[MappingKey]) -> None:
        """Drop what is noted of `owner`'s rows at keys not in `present`, the whole table the router
        holds: a lease that lapsed, a row someone deleted, a router that forgot."""
        ...


# The descriptions miniupnpd would list for the PCP mapping (owner, name, protocol, internal port)
# this host made (backends/pcp/nonce.Recogniser); empty where this host has no PCP secret.
PcpDescriptions = Callable[[str, str, str, int], Collection[str]]


class TagStore:
    """Ownership read from the description's tag: nothing to keep beside the router.

    On miniupnpd a mapping made through PCP shows up in the UPnP table as `PCP MAP <nonce>`. With
    `pcp_made`, such a row is this owner's when its nonce is the one this host's secret derives for
    a mapping the manifest may place at its key (same name, protocol and internal port): a switch
    from pcp:// to UPnP then claims it instead of adding a second one. The claim says so (`through`),
    and the plan re-tags it."""

    def __init__(self, pcp_made: PcpDescriptions | None = None) -> None:
        self.pcp_made = pcp_made

    def label(self, owner: str, key: MappingKey, name: str, description: str = "", *, protect: bool = False) -> str:
        return ownership.describe(owner, key, name, description, protect=protect)

    def claim(
        self, owner: str, key: MappingKey, row: PortMapping, names: Collection[str] = (), cut: int = 0
    ) -> Claim | None:
        found = ownership.claim(owner, key, row.description, names, cut)
        if found is not None or self.pcp_made is None or madethrough.made_through(row) != madethrough.PCP:
            return found
        for name in sorted(names):
            if row.description in self.pcp_made(owner, name, key.protocol.value, row.internal_port):
                return Claim(name, False, through=madethrough.PCP)
        return None

    def record(self, owner: str, key: MappingKey, row: PortMapping, name: str, *, protect: bool = False) -> None:
        """The description written with the row is the record."""

    def release(self, owner: str, key: MappingKey) -> None:
        """Deleting the row deleted its tag."""

    def forget_absent(self, owner: str, present: Collection[MappingKey]) -> None:
        """A row that is gone took its tag with it."""


class InventoryStore:
    """Ownership kept in `inventory.json` in the cache's directory, in the section of one router.

    `router` is the router's identity (a UDN, or what a protocol without one names it by): two
    routers' records never mix. A record keeps the internal client and port written; a row found at
    the key pointing elsewhere was replaced by someone else and is not claimed (foreign until proven
    ours). Unlike the cache, a failure to read or write is an InventoryError: losing a record would
    make an owned row look foreign, and writing over an unreadable file would lose every record.
    Claims read the file once per store (a plan judges every row against one reading); record and
    release re-read it under the lock, so what another process recorded meanwhile is kept.
    """

    def __init__(self, cache: Cache, router: str) -> None:
        if cache.directory is None:
            raise InventoryError("an inventory needs a cache directory to live in")
        if not router:
            raise InventoryError("an inventory is kept per router, and this router has no identity")
        self.cache = cache
        self.router = router
        self._seen: dict[str, Any] | None = None  # the file as last read or written by this store

    @property
    def path(self) -> str:
        assert self.cache.directory is not None
        return os.path.join(self.cache.directory, INVENTORY_FILE)

    def label(self, owner: str, key: MappingKey, name: str, description: str = "", *, protect: bool = False) -> str:
        # Nothing on the router says who owns it. The label names owner and name for people, and for
        # a backend that derives what identifies the mapping from them (a PCP nonce): see `identity`.
        return inventory_label(owner, name, description)

    def claim(
        self, owner: str, key: MappingKey, row: PortMapping, names: Collection[str] = (), cut: int = 0
    ) -> Claim | None:
        held = self._records(self._snapshot()).get(owner, {}).get(_key_text(key))
        if not isinstance(held, dict):
            return None
        if (held.get("internal_client"), held.get("internal_port")) != (row.internal_client, row.internal_port):
            return None
        name, protected = held.get("name"), held.get("protected")
        if not isinstance(name, str) or not isinstance(protected, bool):
            return None
        said = identity(row.description)
        if said is not None and said != (owner, name):
            # A record outlives the row it was made for (a lease that lapsed, a router that forgot): the
            # row at that key now may be another owner's, made since. The row's own label decides.
            return None
        return Claim(name, protected, here=True)

    def owned(self, owner: str) -> dict[MappingKey, Claim]:
        """Every key `owner` holds on this router as recorded: what prune reads where nothing is listed."""
        out: dict[MappingKey, Claim] = {}
        for text, held in self._records(self._snapshot()).get(owner, {}).items():
            key = _parse_key(text)
            if key is not None and isinstance(held, dict) and isinstance(held.get("name"), str):
                out[key] = Claim(held["name"], held.get("protected") is True, here=True)
        return out

    def holders(self, row: PortMapping) -> tuple[str, ...]:
        """The owners recorded as holding `row`, each judged as `claim` judges it: on a router that keeps
        no descriptions, what says a row is portctl's, whichever owner's it is."""
        return tuple(sorted(o for o in self._records(self._snapshot()) if self.claim(o, row.key, row) is not None))

    def record(self, owner: str, key: MappingKey, row: PortMapping, name: str, *, protect: bool = False) -> None:
        entry = {
            "name": name,
            "protected": protect,
            "internal_client": row.internal_client,
            "internal_port": row.internal_port,
        }

        def put(doc: dict[str, Any]) -> None:
            self._section(doc).setdefault(owner, {})[_key_text(key)] = entry

        self._change(put)

    def release(self, owner: str, key: MappingKey) -> None:
        def drop(doc: dict[str, Any]) -> None:
            records = self._section(doc)
            records.get(owner, {}).pop(_key_text(key), None)
            if not records.get(owner, True):
                del records[owner]

        self._change(drop)

    def forget_absent(self, owner: str, present: Collection[MappingKey]) -> None:
        held = self._records(self._snapshot()).get(owner, {})
        gone = [text for text in held if _parse_key(text) not in present]
        if not gone:
            return  # nothing to write: a plan with nothing lapsed leaves the file alone

        def drop(doc: dict[str, Any]) -> None:
            records = self._section(doc)
            for text in gone:
                records.get(owner, {}).pop(text, None)
            if not records.get(owner, True):
                del records[owner]

        self._change(drop)

    # -- the file --------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        """The file as this store last read or wrote it: a plan claims every row from one reading."""
        if self._seen is None:
            self._seen = self._read()
        return self._seen

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {"version": INVENTORY_VERSION, "routers": {}}
        except (OSError, ValueError) as exc:
            raise InventoryError(f"{self.path}: cannot read the ownership inventory: {exc}") from exc
        if (
            not isinstance(doc, dict)
            or doc.get("version") != INVENTORY_VERSION
            or not isinstance(doc.get("routers"), dict)
        ):
            raise InventoryError(f"{self.path}: not a portctl inventory of version {INVENTORY_VERSION}")
        return doc

    def _records(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        section = doc["routers"].get(self.router, {})
        return {o: r for o, r in section.items() if isinstance(r, dict)} if isinstance(section, dict) else {}

    def _section(self, doc: dict[str, Any]) -> dict[str, Any]:
        section = doc["routers"].get(self.router)
        if isinstance(section, dict):
            return section
        fresh: dict[str, Any] = {}
        doc["routers"][self.router] = fresh
        return fresh

    def _change(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Re-read under the cache's lock, change, write atomically: another process's records stay."""
        try:
            with self.cache.locked():
                doc = self._read()
                change(doc)
                self.cache.write_file(INVENTORY_FILE, doc)
                self._seen = doc
        except OSError as exc:
            raise InventoryError(f"{self.path}: cannot write the ownership inventory: {exc}") from exc


def inventory_label(owner: str, name: str, description: str = "") -> str:
    """`OWNER/NAME[ DESCRIPTION]`: neither an owner nor a name may hold a "/" or a space (the schema)."""
    head = f"{owner}/{name}"
    return f"{head} {description}" if description else head


def identity(label: str) -> tuple[str, str] | None:
    """The owner and name an inventory label carries, or None if `label` is none."""
    owner, slash, name = label.partition(" ")[0].partition("/")
    if not slash or not _OWNER.fullmatch(owner) or not _NAME.fullmatch(name):
        return None
    return owner, name


def for_router(describes: bool, cache: Cache, router: str, pcp_made: PcpDescriptions | None = None) -> OwnershipStore:
    """The store for a router: its descriptions where it keeps them (and, with `pcp_made`, this host's
    PCP nonces in the rows miniupnpd lists for PCP mappings), else a local inventory."""
    return TagStore(pcp_made) if describes else InventoryStore(cache, router)


def _key_text(key: MappingKey) -> str:
    return str(key)


def _parse_key(text: str) -> MappingKey | None:
    port, _, protocol = text.partition("/")
    if not port.isdigit() or protocol.upper() not in models.Protocol.__members__:
        return None
    return MappingKey(int(port), models.Protocol(protocol.upper()))
