"""The Backend interface: what the planner and applier need from a router, and nothing more."""

from __future__ import annotations

import abc

from ..errors import RouterUnreachable
from ..models import MappingKey, PortMapping, RouterInfo
from ..quirks import Learned


class Backend(abc.ABC):
    """A router's port-mapping table. Methods raise only portctl's RouterError family."""

    info: RouterInfo
    # What this router needs beyond the spec: loaded from the cache, extended as the router teaches it.
    learned: Learned

    @abc.abstractmethod
    def list_mappings(self) -> list[PortMapping]:
        """The whole table, read before anything is written."""

    @abc.abstractmethod
    def get_mapping(self, key: MappingKey) -> PortMapping | None:
        """The router's row for `key`, or None when the port is free."""

    @abc.abstractmethod
    def add_mapping(self, mapping: PortMapping) -> None:
        """Create exactly `mapping`, or overwrite the router's entry for the same key in place.

        Never adapts it: a router that needs something else (a permanent lease, say) makes this raise
        RouterRefused naming the need, which is learned so that the next plan plans for it.
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

    def event_url(self) -> str:
        """Where to subscribe to the connection service's events; "" if the router offers none."""
        return ""
