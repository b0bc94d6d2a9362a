"""Which rows of a router's table a user picked, for `import` and `audit --clean`. Pure.

Three kinds of selector: `--select PORT/PROTO` (or PORT, both protocols), `--client IP` and
`--description REGEX` (searched, ignoring case). A row is selected when it matches every kind given, each by any of its
values: `--client A --client B --description torrent` is "to A or B, and described torrent".
No selector selects nothing: taking over or deleting "everything" must never happen by accident.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PortctlError
from .models import MappingKey, PortMapping, Protocol

HOW = (
    "select mappings with --select PORT/PROTO (e.g. 51413/tcp, or 51413 for both protocols), "
    "--client IP or --description REGEX; each may be repeated"
)


class BadSelector(PortctlError):
    """A selector that cannot be read: one message naming it."""


@dataclass(frozen=True)
class Port:
    port: int
    protocol: Protocol | None  # None: both

    def matches(self, key: MappingKey) -> bool:
        return key.external_port == self.port and self.protocol in (None, key.protocol)


@dataclass(frozen=True)
class Selection:
    ports: tuple[Port, ...] = ()
    clients: tuple[str, ...] = ()
    descriptions: tuple[re.Pattern[str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.ports or self.clients or self.descriptions)

    def matches(self, row: PortMapping) -> bool:
        if self.empty:
            return False
        return (
            (not self.ports or any(p.matches(row.key) for p in self.ports))
            and (not self.clients or row.internal_client in self.clients)
            and (not self.descriptions or any(r.search(row.description) for r in self.descriptions))
        )

    def pick(self, table: Sequence[PortMapping]) -> list[PortMapping]:
        """The selected rows of `table`, by key."""
        return sorted((r for r in table if self.matches(r)), key=lambda r: r.key)


def parse(ports: Sequence[str] = (), clients: Sequence[str] = (), descriptions: Sequence[str] = ()) -> Selection:
    """The selection the flags' texts say; BadSelector names the first one that cannot be read."""
    return Selection(
        tuple(_port(p) for p in ports),
        tuple(_client(c) for c in clients),
        tuple(_pattern(d) for d in descriptions),
    )


def _port(text: str) -> Port:
    number, slash, proto = text.partition("/")
    if not (number.isascii() and number.isdigit() and len(number) <= 5 and 1 <= int(number) <= 65535):
        raise BadSelector(f"--select {text!r}: the port must be 1-65535, as PORT/PROTO (e.g. 51413/tcp) or PORT")
    if not slash:
        return Port(int(number), None)
    if proto.upper() not in Protocol.__members__:
        raise BadSelector(f"--select {text!r}: the protocol must be tcp or udp")
    return Port(int(number), Protocol(proto.upper()))


def _client(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise BadSelector(f"--client {text!r}: not an IPv4 address") from None


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise BadSelector(f"--description {text!r}: not a regular expression ({exc})") from None
