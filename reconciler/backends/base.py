"""The Backend interface: what the planner and applier need from a router, and nothing more."""

from __future__ import annotations

import abc

from ..models import MappingKey, PortMapping, RouterInfo


class Backend(abc.ABC):
    """A router's port-mapping table. Methods raise only portctl's RouterError family."""

    info: RouterInfo

    @abc.abstractmethod
    def list_mappings(self) -> list[PortMapping]:
        """The whole table, read before anything is written."""

    @abc.abstractmethod
    def add_mapping(self, mapping: PortMapping) -> None:
        """Create the mapping, or overwrite the router's entry for the same key in place."""

    @abc.abstractmethod
    def delete_mapping(self, key: MappingKey, remote_host: str = "") -> None:
        """Remove the mapping; one that is already gone is not an error."""

    @abc.abstractmethod
    def local_address(self) -> str:
        """This host's address on the interface that reaches the router."""
