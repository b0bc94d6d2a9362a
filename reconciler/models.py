"""The values that flow between the stages: frozen dataclasses, with no I/O and no behaviour beyond
counting and summing up what they hold (Plan.summary, ApplyReport.ok)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .boot import Boot

MAX_LEASE = 604800  # IGD v2's longest lease (7 days); v2 routers turn "permanent" (0) into this.


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"


class OnConflict(enum.StrEnum):
    FAIL = "fail"
    NEXT_FREE = "next_free"
    TAKEOVER = "takeover"


class Drift(enum.StrEnum):
    """What the agent does when an owned, declared mapping's row no longer matches what was applied
    for it (changed or gone from the router) while the manifest's wish for it is unchanged."""

    HEAL = "heal"  # write it back (the default)
    WARN = "warn"  # report it (log, condition, metric, webhook) and write nothing
    IGNORE = "ignore"  # write nothing and say nothing


# The fields whose drift a mapping may ignore (`ignore_drift`): a row differing only there is no change.
DRIFT_FIELDS = ("lease", "description")


class Action(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    RENEW = "renew"
    REMOVE = "remove"


@dataclass(frozen=True, order=True)
class MappingKey:
    """What identifies a mapping on a router: the external port and protocol."""

    external_port: int
    protocol: Protocol

    def __str__(self) -> str:
        return f"{self.external_port}/{self.protocol.lower()}"


@dataclass(frozen=True, order=True)
class PortWindow:
    """The external ports, `low` to `high` inclusive, a router that picks ports (PCP, NAT-PMP) may
    grant a next_free mapping instead of the one asked: approved with the plan, kept when granted."""

    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return f"{self.low} to {self.high}"


@dataclass(frozen=True)
class PortMapping:
    """One row of a router's table, or what a row should become.

    `lease` is seconds; 0 means permanent. For a row read from a router it is the time remaining.
    """

    key: MappingKey
    internal_client: str
    internal_port: int
    description: str
    lease: int = 0
    enabled: bool = True
    remote_host: str = ""


PINHOLE_MAX_LEASE = 86400  # WANIPv6FirewallControl's longest lease (1 day); there are no permanent pinholes
PINHOLE_FIRST_PORT = 1024  # routers (miniupnpd) open no pinhole to a privileged port


@dataclass(frozen=True, order=True)
class PinholeKey:
    """What makes two pinholes one to the router: everything but the lease. Re-adding a pinhole with
    the same key answers the UniqueID the router already gave it, which is how an owner finds its own
    again (the router lists no pinholes and keeps no description). Addresses are compressed text
    (`ipaddress`'s form), "" is any remote host and remote port 0 any remote port."""

    internal_client: str  # an IPv6 address of the host that asks (the router insists)
    internal_port: int
    protocol: Protocol
    remote_host: str = ""
    remote_port: int = 0

    def __str__(self) -> str:
        source = (
            f" from [{self.remote_host or '*'}]:{self.remote_port or '*'}"
            if self.remote_host or self.remote_port
            else ""
        )
        return f"[{self.internal_client}]:{self.internal_port}/{self.protocol.lower()}{source}"


@dataclass(frozen=True)
class Pinhole:
    """An IPv6 firewall pinhole: what may come in to `key`, for `lease` seconds (1..PINHOLE_MAX_LEASE).

    The router names the pinhole it opened by a UniqueID; ownership of it goes through an inventory."""

    key: PinholeKey
    lease: int


@dataclass(frozen=True)
class DesiredPinhole:
    """One pinhole the manifest asks for (`both` already expanded); its internal client is "auto" until resolved."""

    name: str
    key: PinholeKey
    lease: int
    line: int = 0  # where the pinhole is declared, for messages


@dataclass(frozen=True)
class HeldPinhole:
    """A pinhole an owner holds as the inventory recorded it: the router's UniqueID for it, when
    its lease ends (seconds on the wall clock) and the router's boot when it was opened or renewed
    (None: unknown, as in records older than that field or from a router that says nothing of it)."""

    name: str
    pinhole: Pinhole  # as asked
    unique_id: int
    expires: float
    granted: int = 0  # the lifetime the router gave where it gave less than asked (PCP may); 0: as asked
    boot: Boot | None = field(default=None, compare=False)

    @property
    def key(self) -> PinholeKey:
        return self.pinhole.key

    @property
    def lasts(self) -> int:
        """The seconds each opening or renewal of it lasts on the router."""
        return self.granted or self.pinhole.lease


class PinholeAction(enum.StrEnum):
    OPEN = "open"  # AddPinhole
    RENEW = "renew"  # UpdatePinhole (AddPinhole again if the router no longer has it)
    CLOSE = "close"  # DeletePinhole


@dataclass(frozen=True)
class PinholeChange:
    """One pinhole write the plan intends: `after` is what is opened or renewed, `before` the record
    of what is held (renew and close name the router's UniqueID through it)."""

    action: PinholeAction
    name: str
    key: PinholeKey
    before: HeldPinhole | None
    after: Pinhole | None
    reason: str = ""


@dataclass(frozen=True)
class DesiredMapping:
    """One router mapping the manifest asks for (ranges and `both` are already expanded)."""

    name: str
    key: MappingKey
    internal_client: str  # an IPv4 address, or "auto" until resolved
    internal_port: int
    lease: int
    description: str = ""
    remote_host: str = ""
    on_conflict: OnConflict = OnConflict.FAIL
    allow_same_port: bool = False  # on a router that requires equal ports, forward to the external port
    allow_permanent: bool = False  # on a router that takes only permanent leases, map it permanently
    allow_any_remote_host: bool = False  # on a router that cannot restrict remote hosts, open it to all
    line: int = 0  # where the mapping is declared, for messages
    protect: bool = False  # marked on the router; prune and destroy leave it alone
    allow_sensitive: bool = False  # a privileged port or a risky service (SSH, RDP...) may be exposed
    drift: Drift = Drift.HEAL  # what the agent does when the router's row drifts from what was applied
    ignore_drift: frozenset[str] = frozenset()  # DRIFT_FIELDS whose difference is never a change


@dataclass(frozen=True)
class Policy:
    """What the manifest allows its own mappings; empty means no limit."""

    allowed_internal_clients: tuple[str, ...] = ()  # IPv4 CIDRs
    allowed_external_ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    max_lease: int = 0  # seconds; 0: no limit (then permanent leases are allowed)
    allowed_ipv6_prefixes: tuple[str, ...] = ()  # IPv6 CIDRs pinholes may lead to


@dataclass(frozen=True)
class Manifest:
    path: str
    owner: str
    mappings: tuple[DesiredMapping, ...]
    router_url: str | None = None
    prune: bool = True
    allow_private_wan: bool = False  # map even when the router's WAN address is private (double NAT)
    policy: Policy = Policy()
    protocols: tuple[str, ...] = ()  # router.protocols: the order to try them in; () the default
    pinholes: tuple[DesiredPinhole, ...] = ()


@dataclass(frozen=True)
class RouterInfo:
    """Which router this is, whatever protocol portctl speaks to it."""

    protocol: str  # how portctl speaks to it: "upnp-igd1", "upnp-igd2"
    identity: str  # what names this router while it stays the same one (UPnP: its UDN); keys cache and lock
    address: str  # where it is reached (UPnP: its description URL)
    description: str = ""  # the name it gives itself (UPnP: friendlyName)
    service: str = ""  # the protocol's own detail of how it is spoken to (UPnP: the connection service type)
    external_ip: str = ""

    # The UPnP names, as saved plans, `--format json` and UPnP-speaking code know them.
    @property
    def udn(self) -> str:
        return self.identity

    @property
    def location(self) -> str:
        return self.address

    @property
    def friendly_name(self) -> str:
        return self.description

    @property
    def igd_version(self) -> int:
        """1 or 2 for a UPnP IGD; 0 for any other protocol."""
        version = self.protocol.removeprefix("upnp-igd")
        return int(version) if version != self.protocol and version.isdigit() else 0

    @property
    def service_type(self) -> str:
        return self.service if self.protocol.startswith("upnp-") else ""


def upnp_router(
    location: str, udn: str, friendly_name: str, igd_version: int, service_type: str, external_ip: str = ""
) -> RouterInfo:
    """A UPnP IGD's RouterInfo from the names its description uses."""
    return RouterInfo(f"upnp-igd{igd_version}", udn, location, friendly_name, service_type, external_ip)


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: object
    after: object


@dataclass(frozen=True)
class Adaptation:
    """A field a plan writes other than the manifest asked, because the router needs it."""

    field: str  # lease, remote_host or internal_port
    asked: object
    written: object
    need: str  # the router's need, as `portctl forget` names it (permanent-only...)
    allowed_by: str = ""  # the manifest opt-in that allowed widening; "" for a narrowing
    proven: bool = True  # False: planned on a suspicion (allowed, so it blocks nothing)


@dataclass(frozen=True)
class Change:
    """One write the plan intends. `replace` means delete then add (the router cannot edit in place)."""

    action: Action
    name: str
    key: MappingKey
    before: PortMapping | None
    after: PortMapping | None
    reason: str = ""
    fields: tuple[FieldChange, ...] = ()
    replace: bool = False
    same_port_ok: bool = False  # the manifest allows forwarding to the external port number instead
    note: str = ""  # what the user should know before approving (a removal pointing at another host)
    adapted: tuple[Adaptation, ...] = ()  # where `after` differs from the manifest, for the router's needs
    allowed: tuple[str, ...] = ()  # the widening opt-ins its mapping gives (allow_permanent...)
    protect: bool = False  # its mapping is protected: an inventory records it (a tag carries it itself)
    # next_free where the router picks the port: the ports it may grant instead of key's, all kept.
    window: PortWindow | None = None
    # Its mapping's drift mode, where this change heals drift (the router's row changed or vanished
    # behind portctl's back); None where it is anything else (an add, an edit of the manifest, a renewal).
    drift: Drift | None = None


@dataclass(frozen=True)
class Conflict:
    """A declared mapping that cannot be placed: a foreign mapping holds its port, or the router
    is known to refuse it (then there is no holder and the reason says what to change)."""

    name: str
    key: MappingKey
    holder: PortMapping | None
    reason: str


@dataclass(frozen=True)
class Refusal:
    """One reason the admission gate refuses a plan (admission.py): policy, sensitive, protected,
    deletions, empty, conflict or blocked, with the mapping it is about when it is about one."""

    kind: str
    message: str
    name: str = ""
    key: MappingKey | None = None


@dataclass(frozen=True)
class Plan:
    owner: str
    changes: tuple[Change, ...]
    foreign: tuple[PortMapping, ...]
    conflicts: tuple[Conflict, ...] = ()
    kept: tuple[PortMapping, ...] = ()  # owned but undeclared, kept because prune is off or it is protected
    protected: tuple[MappingKey, ...] = ()  # the kept rows the ownership store marks protected
    router: RouterInfo | None = None
    table: tuple[PortMapping, ...] = ()  # the router's table the plan was computed from
    # Why nothing in this plan may be applied: the router can map nothing (CGNAT, WAN down), or the
    # manifest's policy or the deletion guards refuse the plan.
    blocked: str = ""
    quirks: tuple[str, ...] = ()  # what this router is known to need, as planned for
    desired: tuple[PortMapping, ...] = ()  # the owned rows the router holds once the plan is applied
    refusals: tuple[Refusal, ...] = ()  # why the admission gate refuses it (empty: it may be applied)
    pinholes: tuple[PinholeChange, ...] = ()  # the IPv6 pinholes to open, renew and close
    pinholes_through: str = ""  # the service that opens them: "upnp" (WANIPv6FirewallControl) or "pcp"
    # Why no pinhole can be opened on this router ("" where they can, or none is asked for).
    pinholes_unavailable: str = ""
    # Drift the plan leaves unwritten because its mapping says warn or ignore (the agent's plans only:
    # a plan made by hand shows drift among its changes, and `portctl apply` heals it).
    withheld: tuple[Change, ...] = ()

    def count(self, *actions: Action) -> int:
        return sum(1 for c in self.changes if c.action in actions)

    @property
    def summary(self) -> dict[str, int]:
        return {
            "add": self.count(Action.ADD),
            "change": self.count(Action.CHANGE, Action.RENEW),
            "remove": self.count(Action.REMOVE),
            "conflict": len(self.conflicts),
        }

    def count_pinholes(self, action: PinholeAction) -> int:
        return sum(1 for c in self.pinholes if c.action is action)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.pinholes)


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    ok: bool
    error: str = ""
    skipped: bool = False  # not written: the row it would touch was no longer the one the plan saw
    final: bool = False  # refused in a way a rerun repeats (the manifest or the router must change)
    granted: MappingKey | None = None  # where the router put it instead of change.key, inside change.window


@dataclass(frozen=True)
class PinholeResult:
    change: PinholeChange
    ok: bool
    error: str = ""
    unique_id: int = 0  # the router's UniqueID for an opened or renewed pinhole
    final: bool = False  # refused in a way a rerun repeats
    warning: str = ""  # done, but not all is well (the router cannot close it before its lease ends)


@dataclass(frozen=True)
class ApplyReport:
    results: tuple[ChangeResult, ...] = field(default_factory=tuple)
    table: tuple[PortMapping, ...] | None = None  # the router's table as read back after the writes
    unverified: str = ""  # why the table could not be read back: the "done" rows are only acknowledged
    pinholes: tuple[PinholeResult, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and all(r.ok for r in self.pinholes) and not self.unverified

    @property
    def failed(self) -> tuple[ChangeResult, ...]:
        """Every change not done, skipped ones included."""
        return tuple(r for r in self.results if not r.ok)

    @property
    def skipped(self) -> tuple[ChangeResult, ...]:
        return tuple(r for r in self.results if r.skipped)
