"""Router snapshots: what an offline plan needs of a router, as one versioned JSON document.

`portctl show --format json` prints it (and `show --snapshot-out FILE` writes it); the agent writes
one after each pass. `portctl plan --snapshot FILE` plans against it through `SnapshotBackend`, a
read-only Backend that never opens a socket, so a CI runner that cannot reach the router plans
against its last known state. The document is described by schemas/snapshot.schema.json.

`load` is strict: a file too large, not JSON, of another snapshot version, or with any field not as
`document` writes it is one SnapshotError naming the file and the field. The rows and the router
are those of every portctl JSON document; a snapshot written under format_version 1 (before the
family named its `kind`) holds the same fields and is read as well.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from . import plancodec, urls
from .backends.base import Backend, Capabilities
from .durations import format_duration
from .errors import PortctlError, RouterUnreachable
from .models import MAX_LEASE, MappingKey, PortMapping, PortWindow, RouterInfo
from .quirks import Learned

FORMAT = "portctl-snapshot"
VERSION = 1
# A full table of both protocols is ~130k rows of ~300 bytes; anything beyond is not a snapshot.
MAX_BYTES = 64 * 1024 * 1024
TIME_LIMIT = 2.0**40  # seconds since 1970, as read_time bounds them


class SnapshotError(PortctlError):
    """A snapshot that cannot be planned from: unreadable, malformed, of another version, too old."""


class SnapshotWrite(PortctlError):
    """Something tried to write to a router through its snapshot: never allowed."""


@dataclass(frozen=True)
class Snapshot:
    """A router as read at `read_at` (wall clock seconds)."""

    info: RouterInfo
    capabilities: Capabilities
    learned: Learned
    read_at: float
    table: tuple[PortMapping, ...]
    auto: str | None  # the address `internal_client: auto` resolved to on the host that read it
    pinhole_source: str | None = None  # the IPv6 address a pinhole's `auto` resolved to, if known
    boot_id: int | None = None


# -- writing ---------------------------------------------------------------------------------


iso = plancodec.iso


def header(read_at: float, capabilities: Capabilities, auto: str | None, pinhole_source: str | None) -> dict[str, Any]:
    """The fields a snapshot adds to `show --format json`'s document."""
    return {
        "snapshot": {"format": FORMAT, "version": VERSION},
        "read_at": plancodec.time_json(round(read_at, 3)),
        "capabilities": asdict(capabilities),
        "auto": {"internal_client": auto, "pinhole_source": pinhole_source or None},
    }


def write(path: str, doc: dict[str, Any]) -> None:
    """Write `doc` to `path` atomically: a reader sees the old snapshot or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SnapshotError(f"cannot write the snapshot {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        raise SnapshotError(f"cannot write the snapshot {path}: {exc}") from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# -- reading ---------------------------------------------------------------------------------


def load(path: str) -> Snapshot:
    """The snapshot in `path`; one SnapshotError naming the file and what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise SnapshotError(f"{path}: larger than {MAX_BYTES} bytes; not a snapshot portctl wrote")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SnapshotError(f"{path}: not a JSON snapshot ({exc})") from None
    try:
        return decode(doc)
    except plancodec.Malformed as exc:
        raise SnapshotError(f"{path}: not a snapshot portctl can plan from: {exc}") from None


def decode(doc: object) -> Snapshot:
    """The Snapshot `doc` holds; raises plancodec.Malformed naming the first field that is wrong."""
    if not isinstance(doc, dict):
        raise plancodec.Malformed("the document", "expected a JSON object")
    kind = doc.get("snapshot")
    if not isinstance(kind, dict) or kind.get("format") != FORMAT:
        raise plancodec.Malformed("snapshot.format", f"missing or not {FORMAT!r} (show --format json writes it)")
    if kind.get("version") != VERSION:
        raise plancodec.Malformed(
            "snapshot.version", f"version {kind.get('version')!r}; this portctl reads snapshot version {VERSION}"
        )
    read_at = _read_at(plancodec.read_object(doc, "read_at", ""))
    info = plancodec.read_router(plancodec.read_object(doc, "router", ""), "router")
    capabilities = _capabilities(plancodec.read_object(doc, "capabilities", ""))
    learned_doc = _learned(plancodec.read_object(doc, "learned", ""))
    auto = plancodec.read_object(doc, "auto", "")
    boot = doc.get("boot")
    boot_id = None
    if boot is not None:
        boot_id = plancodec.read_object(doc, "boot", "").get("boot_id")
        if boot_id is not None and (not isinstance(boot_id, int) or isinstance(boot_id, bool) or boot_id < 0):
            raise plancodec.Malformed("boot.boot_id", "expected a whole number or null")
    table = plancodec.read_list(doc, "mappings", "", plancodec.read_mapping)
    keys = [m.key for m in table]
    if len(set(keys)) != len(keys):
        raise plancodec.Malformed("mappings", "the same port and protocol listed twice")
    return Snapshot(
        info,
        capabilities,
        Learned.from_json(learned_doc, read_at),
        read_at,
        table,
        _address(auto, "internal_client", 4),
        _address(auto, "pinhole_source", 6),
        boot_id,
    )


def _read_at(d: dict[str, Any]) -> float:
    at = plancodec.read_time(d, "read_at")
    if at <= 0:
        raise plancodec.Malformed("read_at.epoch", "expected seconds since 1970")
    return at


def _learned(d: dict[str, Any]) -> dict[str, Any]:
    """`learned` as strictly as a saved plan's text: a lesson's evidence reaches plan output and the
    plans saved from it, so it is printable, on one line and bounded, and its times are finite. Needs
    this portctl does not know are left out (Learned.from_json), as in the cache, but checked first."""
    quirks = plancodec.read_object(d, "quirks", "learned")
    for name in quirks:
        if len(name) > 40 or not name.isprintable():
            raise plancodec.Malformed("learned.quirks", "a need's name is longer than 40 characters or unprintable")
        at = f"learned.quirks.{name}"
        lesson = plancodec.read_object(quirks, name, "learned.quirks")
        plancodec.read_text(lesson, "evidence", at, 200)
        plancodec.read_bool(lesson, "proven", at)
        plancodec.read_number(lesson, "seen", at, TIME_LIMIT)
    if "updated" in d:  # what a cache entry carries; a snapshot written by hand may too
        plancodec.read_number(d, "updated", "learned", TIME_LIMIT)
    # Snapshots write both, null for none; from_json takes a number in range and ignores the rest.
    for name, high in (("description_limit", 255), ("list_cap", 2**31)):
        if d.get(name) is not None:
            plancodec.read_int(d, name, "learned", 0, high)
    return d


def _capabilities(d: dict[str, Any]) -> Capabilities:
    flags = {
        name: plancodec.read_bool(d, name, "capabilities")
        for name in ("can_list", "can_describe", "picks_external_port", "sends_events", "finite_leases")
    }
    longest = plancodec.read_int(d, "longest_lease", "capabilities", 1, 2 * MAX_LEASE)
    # Snapshots written before it carry none: such a router keeps no moved grant (the safe reading).
    if "keeps_moved_grants" in d:
        flags["keeps_moved_grants"] = plancodec.read_bool(d, "keeps_moved_grants", "capabilities")
    return Capabilities(longest_lease=longest, **flags)


def _address(d: dict[str, Any], name: str, family: int) -> str | None:
    value = d.get(name)
    if value is None:
        return None
    text = plancodec.read_text(d, name, "auto", 64)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise plancodec.Malformed(f"auto.{name}", f"{text!r} is not an IPv{family} address") from None
    if address.version != family:
        raise plancodec.Malformed(f"auto.{name}", f"{text!r} is not an IPv{family} address")
    return text


# -- planning from it ------------------------------------------------------------------------


# Two hosts' clocks (the reader's, the planner's) disagree by seconds under NTP; by more than this,
# a snapshot "from the future" says one clock is wrong or the file was made by hand.
MAX_AHEAD = 300


def age(snap: Snapshot, now: float) -> int:
    """Whole seconds since the snapshot was read (0 for one stamped ahead of this clock, within MAX_AHEAD)."""
    return max(0, round(now - snap.read_at))


def source(path: str) -> str:
    """How plans name where their table came from (markdown's Read.source)."""
    return f"from snapshot {path}"


def check_age(path: str, snap: Snapshot, max_age: int | None, now: float) -> None:
    """Refuse a snapshot older than `max_age` seconds (None: any age), and always one read more than
    MAX_AHEAD seconds after `now`: its age is unknown, so no maximum age could hold it back, and a
    plan from a router as it will be is no plan of the router as it is."""
    ahead = snap.read_at - now
    if ahead > MAX_AHEAD:
        raise SnapshotError(
            f"{path}: the snapshot says it was read at {iso(snap.read_at)}, {format_duration(round(ahead))} after "
            f"this host's clock ({iso(now)}): its age cannot be known, so it is not planned from. Check the clock "
            "of this host and of the host that read the router, then take a fresh snapshot. Nothing was planned"
        )
    if max_age is None or age(snap, now) <= max_age:
        return
    raise SnapshotError(
        f"{path}: the snapshot was read {format_duration(age(snap, now))} ago (at {iso(snap.read_at)}), "
        f"older than --max-snapshot-age {format_duration(max_age)}: take a fresh one on a host that reaches "
        "the router (portctl show --snapshot-out FILE, or the agent's snapshot setting). Nothing was planned"
    )


def check_plannable(path: str, snap: Snapshot) -> None:
    """A router whose rows carry no owner tag keeps its owners in the reading host's inventory, which
    a snapshot does not hold: planning from it would take every owned row for a stranger's."""
    if not (snap.capabilities.can_list and snap.capabilities.can_describe):
        raise SnapshotError(
            f"{path}: the router was read through {snap.info.protocol}, which cannot list or describe its "
            "mappings, so which rows are whose is known only on the host that read it: plan there, or "
            "snapshot the router's UPnP IGD. Nothing was planned"
        )


def check_router(path: str, snap: Snapshot, manifest_path: str, url: str | None) -> None:
    """Refuse a snapshot of a router other than the one the manifest names (router.url): a plan from
    it would be a plan of that other router. A manifest naming none plans against whichever router
    the snapshot is of, which the plan names (its router line, JSON's `router`)."""
    if url is None or same_place(url, snap.info.address):
        return
    name = snap.info.description or snap.info.identity
    raise SnapshotError(
        f"{path}: the snapshot is of the router at {snap.info.address} ({name}), but {manifest_path} names "
        f"router.url {url}: a plan from it would plan another router's table. Take a snapshot of {url} "
        "(portctl show --router URL --snapshot-out FILE), or correct router.url. Nothing was planned"
    )


_DEFAULT_PORTS = {"http": 80, "https": 443, "pcp": 5351, "natpmp": 5351}


def same_place(a: str, b: str) -> bool:
    """Do the router URLs `a` and `b` name one place? Case of the scheme and host, an IP address's
    spelling, a default port written or not, and a link-local zone (a name on one host) aside."""
    return _place(a) == _place(b)


def _place(url: str) -> tuple[str, str, int | None, str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (url, "", None, "", "")
    host = urls.host(url).partition("%")[0]
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower().rstrip(".")
    scheme = parts.scheme.lower()
    return (scheme, host, port or _DEFAULT_PORTS.get(scheme), parts.path or "/", parts.query)


class SnapshotBackend(Backend):
    """A router as a snapshot recorded it: reads answer from the snapshot, writes raise, no socket is
    ever opened."""

    def __init__(self, snap: Snapshot, path: str) -> None:
        self.snap = snap
        self.path = path
        self.info = snap.info
        self.capabilities = snap.capabilities
        self.learned = snap.learned

    def list_mappings(self) -> list[PortMapping]:
        return list(self.snap.table)

    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        return next((m for m in self.snap.table if m.key == key), None)

    def add_mapping(self, mapping: PortMapping, window: PortWindow | None = None) -> MappingKey | None:
        raise SnapshotWrite(f"{self.path} is a snapshot: nothing is ever written from one (add {mapping.key})")

    def delete_mapping(self, mapping: PortMapping) -> None:
        raise SnapshotWrite(f"{self.path} is a snapshot: nothing is ever written from one (delete {mapping.key})")

    def local_address(self) -> str:
        if self.snap.auto is None:
            raise RouterUnreachable(f"the snapshot {self.path} records no address for internal_client: auto")
        return self.snap.auto

    def external_address(self) -> str:
        return self.snap.info.external_ip

    def boot_id(self) -> int | None:
        return self.snap.boot_id


def auto_line(address: str | None, where: str) -> str:
    """The one line `validate` and `plan` say about `internal_client: auto`."""
    if address is None:
        return f"internal_client auto = unknown ({where} gives no address towards the router)"
    return f"internal_client auto = {address} ({where})"


def uses_auto(internal_clients: Sequence[str]) -> bool:
    return "auto" in internal_clients


def document(
    backend: Backend,
    table: Sequence[PortMapping],
    *,
    read_at: float,
    boot: dict[str, Any] | None,
    owners: dict[MappingKey, str] | None = None,
    protocols: dict[str, Any] | None = None,
    pinholes: Sequence[dict[str, Any]] = (),
    pinhole_source: str | None = None,
) -> dict[str, Any]:
    """The snapshot of `backend`'s router whose table was `table` at `read_at`: `show --format json`'s
    document. `owners` labels rows (owned, portctl, foreign) for readers; planning ignores it."""
    labels = owners or {}
    rows = [{**(plancodec.mapping_json(m) or {}), "owner": labels.get(m.key, "")} for m in table]
    return {
        **plancodec.header("snapshot"),
        **header(read_at, backend.capabilities, backend.local_or_unknown(), pinhole_source),
        "router": plancodec.router_json(backend.info),
        "boot": boot,
        "learned": backend.learned.to_json(),
        "protocols": protocols,
        "mappings": rows,
        "pinholes": list(pinholes),
    }
