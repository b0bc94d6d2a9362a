"""Reading a router's whole port-mapping table, safely and in few requests; it owns paging.

Debian's miniupnpd 2.3.1 overflows a 128-entry buffer when a GetListOfPortMappings range holds more
than 128 entries of one protocol: up to 132 it answers 128 of them, the newest, not the lowest ports;
past that it crashes, and NewNumberOfPorts does not prevent it. `paging` decides which port ranges
are safe to list; a table it cannot vouch for is read entry by entry with GetGenericPortMappingEntry,
which is slow but cannot crash the router. A page that comes back full is read again in parts; the
GetGenericPortMappingEntry probe that bounds the table before listing also proves the pages held all
of it when they add up to that bound (`paging.bounds`). The size a read proved and where the ports lay
are kept in the cache per router, to cut and check the next read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol as Interface

from ... import paging, quirks, xmlsafe
from ...cache import Cache
from ...errors import RouterError, RouterProtocolError, UpnpActionError
from ...models import MappingKey, PortMapping, Protocol
from ...numbers import NotANumber, ascii_int
from ...quirks import Learned, Quirk, Then

MAX_ENTRIES = 2 * 65535  # no table can hold more distinct mappings; bounds a router that loops


class Call(Interface):
    """One control action on the router's connection service (Session.call, bound to it)."""

    def __call__(self, action: str, **args: str) -> dict[str, str]: ...


Means = Callable[[str, RouterError, Then], bool]  # does the fallback table read this failure as `then`?


@dataclass(frozen=True)
class _Page:
    """What one GetListOfPortMappings gave for one port range."""

    protocol: Protocol
    start: int
    end: int
    rows: tuple[PortMapping, ...]

    def covers(self, key: MappingKey) -> bool:
        return key.protocol is self.protocol and self.start <= key.external_port <= self.end


class TableReader:
    """The table of the router known as `identity` in `cache`, read through `call`. `learned` gives
    what the router is known to need now (it learns a listing cap or that listings fail); `clock`
    stamps those lessons."""

    def __init__(
        self,
        call: Call,
        *,
        actions: frozenset[str],
        cache: Cache,
        identity: str,
        learned: Callable[[], Learned],
        means: Means,
        clock: Callable[[], float],
    ) -> None:
        self._call = call
        self._actions = actions
        self._cache = cache
        self._identity = identity
        self._learned = learned
        self._means = means
        self._clock = clock

    def list_mappings(self) -> list[PortMapping]:
        learned = self._learned()
        if "GetListOfPortMappings" not in self._actions or Quirk.NO_PORT_LISTING in learned:
            return self._list_by_index()
        last = self._cache.get("tables", self._identity)
        rows = None
        paged = self._pages(last)
        if paged is not None:
            pages, bound = paged
            read: list[_Page] = []
            try:
                # A table proven to hold at most 0 entries is read whole with no page at all: the
                # same GetGenericPortMappingEntry answer that ends an entry-by-entry read at index 0.
                for proto in Protocol if bound else ():
                    for start, end in pages[proto]:
                        read += self._list(proto, start, end)
                rows = list({m.key: m for page in read for m in page.rows}.values())
            except RouterError as exc:
                if not self._means("GetListOfPortMappings", exc, Then.FALL_BACK):
                    raise
                learned.learn(Quirk.NO_PORT_LISTING, f"GetListOfPortMappings: {exc}", now=self._clock())
            if rows is not None and not paging.proven_whole(bound, len(rows)) and not self._past_end(len(rows)):
                # The table holds more than the pages gave: some page was cut short without looking full.
                rows = self._list_by_index()
                self._learn_cap(read, rows)
        if rows is None:
            rows = self._list_by_index()
        self._remember_ports(rows, last)
        return rows

    def _pages(self, last: dict[str, object] | None) -> tuple[dict[Protocol, list[tuple[int, int]]], int] | None:
        """Port ranges to list per protocol, each safe for the router, given where the ports lay
        `last` time, and the size a probe showed the table within; None when no paging can be vouched for."""
        last = last or {}
        total = last.get("total")
        cut_points = {proto: _ints(last.get(proto.value)) for proto in Protocol}
        known = isinstance(total, int) and all(c is not None for c in cut_points.values())
        for bound in paging.bounds(total if known and isinstance(total, int) else None):
            if self._past_end(bound):
                return {proto: paging.ranges(points or []) for proto, points in cut_points.items()}, bound
        return None  # grown by more than the pages leave room for, or big and never read with listings

    def _remember_ports(self, rows: list[PortMapping], last: dict[str, object] | None) -> None:
        """The size this read proved and where its ports lie, to cut and check the next read."""
        now: dict[str, object] = {"total": len(rows)}
        for proto in Protocol:
            now[proto.value] = paging.cuts(m.key.external_port for m in rows if m.key.protocol is proto)
        if last is None or any(last.get(k) != v for k, v in now.items()):
            self._cache.put("tables", self._identity, now)

    def _past_end(self, index: int) -> bool:
        """Does the table hold at most `index` entries? One GetGenericPortMappingEntry tells."""
        try:
            self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(index))
        except RouterError as exc:
            if not self._means("GetGenericPortMappingEntry", exc, Then.END):
                raise
            return True
        return False

    def _list(self, protocol: Protocol, start: int, end: int) -> list[_Page]:
        """The pages that read one range. A full page is never taken as complete: miniupnpd 2.3.1
        answers 128 of a range's rows, the newest, not the lowest ports. The range is split at the
        middle of what it gave, and each part read again, until every page came back short."""
        rows = self._list_range(protocol, start, end)
        cap = min(paging.PAGE_LIMIT, self._learned().list_cap or paging.PAGE_LIMIT)
        if len(rows) < cap or start == end:
            return [_Page(protocol, start, end, tuple(rows))]
        ports = sorted(m.key.external_port for m in rows)
        middle = min(max(ports[len(ports) // 2 - 1], start), end - 1)
        return self._list(protocol, start, middle) + self._list(protocol, middle + 1, end)

    def _learn_cap(self, pages: list[_Page], table: list[PortMapping]) -> None:
        """Remember a cap from pages that the whole table shows were cut short, so later reads split them."""
        cut = []
        for page in pages:
            held = sum(1 for m in table if page.covers(m.key))
            if page.rows and held > len(page.rows):
                cut.append((len(page.rows), held, page))
        if cut:
            got, held, page = min(cut, key=lambda c: c[0])
            evidence = (
                f"GetListOfPortMappings answered {got} of the {held} {page.protocol.value} mappings "
                f"in ports {page.start}-{page.end}"
            )
            quirks.learn_list_cap(self._learned(), got, evidence, self._clock())

    def _list_range(self, protocol: Protocol, start: int, end: int) -> list[PortMapping]:
        try:
            out = self._call(
                "GetListOfPortMappings",
                NewStartPort=str(start),
                NewEndPort=str(end),
                NewProtocol=protocol.value,
                NewManage="1",
                NewNumberOfPorts=str(paging.PAGE_LIMIT),
            )
        except UpnpActionError as exc:
            if self._means("GetListOfPortMappings", exc, Then.EMPTY):
                return []
            raise
        listing = out.get("NewPortListing") or ""
        if not listing.strip():
            return []
        root = xmlsafe.parse(listing, "GetListOfPortMappings listing")
        rows = []
        for entry in root.iter():
            if xmlsafe.local(entry.tag) == "PortMappingEntry":
                fields = {xmlsafe.local(e.tag): (e.text or "").strip() for e in entry}
                # The listing's element names differ from GetGenericPortMappingEntry's arguments.
                fields["NewPortMappingDescription"] = fields.get("NewDescription", "")
                fields["NewLeaseDuration"] = fields.get("NewLeaseTime", "0")
                rows.append(fields)
        return [m for m in (parse_row(row, "GetListOfPortMappings") for row in rows) if m is not None]

    def _list_by_index(self) -> list[PortMapping]:
        seen: dict[MappingKey, PortMapping] = {}
        for index in range(MAX_ENTRIES):
            try:
                out = self._call("GetGenericPortMappingEntry", NewPortMappingIndex=str(index))
            except RouterError as exc:
                if self._means("GetGenericPortMappingEntry", exc, Then.END):
                    break
                raise
            row = parse_row({k: "" if v is None else str(v) for k, v in out.items()}, "GetGenericPortMappingEntry")
            if row is not None:
                seen.setdefault(row.key, row)
        return list(seen.values())


def parse_row(fields: dict[str, str], action: str) -> PortMapping | None:
    """A table row `action` answered, or None for a row that no declared mapping could be (unknown
    protocol, port out of range). A number that is not one makes the answer malformed."""
    try:
        protocol = Protocol(fields.get("NewProtocol", "").strip().upper())
    except ValueError:
        return None
    port = number(fields.get("NewExternalPort", "").strip(), action, "NewExternalPort")
    internal_port = number(fields.get("NewInternalPort", "").strip() or "0", action, "NewInternalPort")
    lease = number(fields.get("NewLeaseDuration", "").strip() or "0", action, "NewLeaseDuration")
    if not 0 < port < 65536:
        return None
    enabled = fields.get("NewEnabled", "1").strip().lower() not in ("0", "false", "no")
    return PortMapping(
        key=MappingKey(port, protocol),
        internal_client=xmlsafe.printable(fields.get("NewInternalClient", "").strip(), 64),
        internal_port=internal_port,
        # Printable, so a foreign row cannot put terminal escapes into a plan or a log line.
        description=xmlsafe.printable(fields.get("NewPortMappingDescription", ""), 256),
        lease=lease,
        enabled=enabled,
        remote_host=xmlsafe.printable(fields.get("NewRemoteHost", "").strip(), 64),
    )


def number(text: str, action: str, field: str) -> int:
    """A whole number the router sent (ports, leases, uptime are ui2/ui4: ten digits at most)."""
    try:
        return ascii_int(text, max_digits=10)
    except NotANumber as exc:
        raise RouterProtocolError(f"{action}: malformed answer from the router ({field} {exc})") from None


def _ints(value: object) -> list[int] | None:
    """A list of integers from the cache, or None for anything else."""
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    return None
