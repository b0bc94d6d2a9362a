"""The Backend interface: what the planner and applier need from a router, and nothing more, and
the capabilities each backend declares so that callers ask instead of assuming UPnP."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import RouterUnreachable
from ..models import MappingKey, Pinhole, PinholeKey, PortMapping, PortWindow, RouterInfo
from ..quirks import Learned


@dataclass(frozen=True)
class Capabilities:
    """What a protocol can do, declared by its backend. UPnP IGD can do all but pick the port;
    NAT-PMP and PCP cannot list or describe, and pick the external port themselves."""

    can_list: bool  # list_mappings reads the whole table, foreign rows included
    can_describe: bool  # a row carries a description, so ownership can be read from the router
    picks_external_port: bool  # the router, not the request, decides the external port
    sends_events: bool  # the router pushes change events (see EventSource)
    longest_lease: int  # seconds; what "permanent" becomes, and what a lease is renewed against
    # Every lease ends (PCP, NAT-PMP): a manifest's "permanent" is refused unless it accepts longest_lease.
    finite_leases: bool = False
    # A grant of another port than asked is known to be this request's own (PCP: the answer carries the
    # request's nonce), so next_free may keep it. NAT-PMP answers a request for an internal port already
    # mapped with that mapping, which may be another application's or another owner's: never kept there.
    keeps_moved_grants: bool = False


@runtime_checkable
class EventSource(Protocol):
    """A backend whose router pushes change events (UPnP GENA): where to subscribe."""

    def event_url(self) -> str:
        """Where to subscribe to the router's events; "" if it offers none."""
        ...


@dataclass(frozen=True)
class Opened:
    """A pinhole the router opened: its name for it (UPnP's UniqueID; 0 where it names none, as PCP)
    and the seconds it granted; `warning` says what is wrong with it though it is open as asked (PCP:
    the router can no longer close it before its lease ends), for the apply result to show."""

    unique_id: int
    lease: int
    warning: str = ""


class PinholeOpener(Protocol):
    """Where IPv6 pinholes are opened (UPnP's WANIPv6FirewallControl, or PCP): each request leaves
    from `source`, this host's address that every pinhole of this opener leads to (routers insist)."""

    @property
    def source(self) -> str: ...

    def open(self, pinhole: Pinhole) -> Opened:
        """Open exactly `pinhole`, or extend it where it is open already; a typed refusal otherwise
        (a grant broader than asked is closed again and refused; one the router holds for another
        client is left untouched: PinholeHeldElsewhere)."""
        ...

    def renew(self, pinhole: Pinhole) -> Opened:
        """Extend `pinhole`, held already, to its lease from now (`open` again, or what the service needs)."""
        ...

    def shut(self, key: PinholeKey) -> None:
        """Close the pinhole `key`; nothing to do where it is gone already. A pinhole the router holds
        for another client is refused (RouterRefused) and left open."""
        ...

    def close(self) -> None: ...


class Backend(abc.ABC):
    """A router's port-mapping table. Methods raise only portctl's RouterError family."""

    info: RouterInfo
    capabilities: Capabilities
    # What this router needs beyond the spec: loaded from the cache, extended as the router teaches it.
    learned: Learned

    @abc.abstractmethod
    def list_mappings(self) -> list[PortMapping]:
        """The whole table, read before anything is written."""

    @abc.abstractmethod
    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        """The router's row for `key`, or None when the port is free."""

    @abc.abstractmethod
    def add_mapping(self, mapping: PortMapping, window: PortWindow | None = None) -> MappingKey | None:
        """Create exactly `mapping`, or overwrite the router's entry for the same key in place.

        Never adapts it: a router that needs something else (a permanent lease, say) makes this raise
        RouterRefused naming the need, which is learned so that the next plan plans for it.
        `window` (the plan's, next_free) is where a router that picks the port may put it instead:
        the key it granted there is returned, and kept; None means it is at `mapping.key`. A backend
        whose router takes the port it is given ignores it, and one that cannot tell a moved grant
        from another mapping (not `keeps_moved_grants`) refuses a moved grant whatever the window.
        """

    @abc.abstractmethod
    def delete_mapping(self, mapping: PortMapping) -> None:
        """Remove the router's row `mapping`; one that is already gone is not an error."""

    @abc.abstractmethod
    def local_address(self) -> str:
        """This host's address on the interface that reaches the router; RouterUnreachable when
        there is no route to it."""

    def local_or_unknown(self) -> str | None:
        """This host's address towards the router, or None when it cannot be told.

        None is not "" on purpose: an unknown address must never compare equal (or unequal) to a
        mapping's client by accident; the planner and the fallback table read None as unknown.
        """
        try:
            return self.local_address()
        except RouterUnreachable:
            return None

    @abc.abstractmethod
    def external_address(self) -> str:
        """The router's WAN address now (one cheap request: how the agent notices a change)."""

    def uptime(self) -> int | None:
        """Seconds since the router's connection came up, if it says; a drop means it restarted."""
        return None

    def boot_id(self) -> int | None:
        """The id the router gives its current boot (UPnP: SSDP BOOTID.UPNP.ORG), if it gives one; a
        change means it restarted. Never raises: unknown is None."""
        return None
