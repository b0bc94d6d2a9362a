"""IPv6 pinholes: the WANIPv6FirewallControl:1 service, with the rules miniupnpd 2.3.1 enforces.

Measured on Debian's miniupnpd (../shared/PROTOCOL-NOTES.md): the internal client must be the
request's own IPv6 source address, even with secure mode off (606); an internal port below 1024 is
606; the lease is 1..86400 s (402 otherwise); re-adding an identical pinhole extends it and returns
the same UniqueID; a second DeletePinhole answers 402; GetOutboundPinholeTimeout answers 501 and
CheckPinholeWorking 709. There is no listing action and no description.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass

SERVICE_TYPE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
MAX_LEASE = 86400
PROTOCOLS = (6, 17, 65535)  # TCP, UDP, and every protocol
Args = dict[str, str]


class PinholeFault(Exception):
    """A UPnP error the firewall service answers with."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Pinhole:
    unique_id: int
    remote_host: str  # "": any
    remote_port: int  # 0: any
    internal_client: str
    internal_port: int
    protocol: int
    expires: float
    packets: int = 0

    @property
    def identity(self) -> tuple[str, int, str, int, int]:
        return (self.remote_host, self.remote_port, self.internal_client, self.internal_port, self.protocol)


class Firewall:
    """The pinhole table on `clock` (the router's, so its virtual time moves leases too)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.pinholes: dict[int, Pinhole] = {}
        self.calls: list[str] = []
        self._next_id = 1
        self._lock = threading.Lock()

    @property
    def actions(self) -> dict[str, Callable[[Args, str], Args]]:
        return {
            "GetFirewallStatus": self._status,
            "GetOutboundPinholeTimeout": self._outbound_timeout,
            "AddPinhole": self._add,
            "UpdatePinhole": self._update,
            "DeletePinhole": self._delete,
            "GetPinholePackets": self._packets,
            "CheckPinholeWorking": self._check_working,
        }

    def call(self, action: str, args: Args, client: str) -> Args:
        handler = self.actions.get(action)
        if handler is None:
            raise PinholeFault(401)
        with self._lock:
            self.calls.append(action)
            self._expire()
            return handler(args, client)

    def rows(self) -> list[Pinhole]:
        with self._lock:
            self._expire()
            return list(self.pinholes.values())

    def clear(self) -> None:
        """A restart: every pinhole gone, and UniqueIDs given from 1 again (miniupnpd's next_uid)."""
        with self._lock:
            self.pinholes.clear()
            self._next_id = 1

    def shift(self, seconds: float) -> None:
        """The router moved to another clock: every pinhole keeps its time left."""
        with self._lock:
            for pinhole in self.pinholes.values():
                pinhole.expires += seconds

    # -- actions ---------------------------------------------------------------------------

    def _status(self, args: Args, client: str) -> Args:
        # Says yes even where pinholes cannot work: only a successful AddPinhole proves they do.
        return {"FirewallEnabled": "1", "InboundPinholeAllowed": "1"}

    def _outbound_timeout(self, args: Args, client: str) -> Args:
        raise PinholeFault(501)

    def _add(self, args: Args, client: str) -> Args:
        internal_port = _uint(args, "InternalPort", 0xFFFF)
        protocol = _uint(args, "Protocol", 0xFFFF)
        lease = _uint(args, "LeaseTime", 0xFFFFFFFF)
        remote_port = _uint(args, "RemotePort", 0xFFFF)
        if protocol not in PROTOCOLS or not 1 <= lease <= MAX_LEASE:
            raise PinholeFault(402)
        internal_client = _own_address(args.get("InternalClient", ""), client, internal_port)
        remote_host = _remote_host(args.get("RemoteHost", ""))
        wanted = (remote_host, remote_port, internal_client, internal_port, protocol)
        same = next((p for p in self.pinholes.values() if p.identity == wanted), None)
        if same is not None:
            same.expires = self.clock() + lease  # identical: extended, and the same UniqueID
            return {"UniqueID": str(same.unique_id)}
        unique_id = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        self.pinholes[unique_id] = Pinhole(unique_id, *wanted, expires=self.clock() + lease)
        return {"UniqueID": str(unique_id)}

    def _update(self, args: Args, client: str) -> Args:
        pinhole = self._held(args, client, missing=704)
        lease = _uint(args, "NewLeaseTime", 0xFFFFFFFF)
        if not 1 <= lease <= MAX_LEASE:
            raise PinholeFault(402)
        pinhole.expires = self.clock() + lease
        return {}

    def _delete(self, args: Args, client: str) -> Args:
        pinhole = self._held(args, client, missing=402)  # measured: a second delete answers 402
        del self.pinholes[pinhole.unique_id]
        return {}

    def _packets(self, args: Args, client: str) -> Args:
        return {"PinholePackets": str(self._held(args, client, missing=704).packets)}

    def _check_working(self, args: Args, client: str) -> Args:
        self._held(args, client, missing=704)
        raise PinholeFault(709)  # NoTrafficReceived: what 2.3.1 answers, working or not

    def _held(self, args: Args, client: str, *, missing: int) -> Pinhole:
        """The pinhole `UniqueID` names, if `client` may touch it (its own internal client)."""
        pinhole = self.pinholes.get(_uint(args, "UniqueID", 0xFFFF))
        if pinhole is None:
            raise PinholeFault(missing)
        _own_address(pinhole.internal_client, client, pinhole.internal_port)
        return pinhole

    def _expire(self) -> None:
        now = self.clock()
        self.pinholes = {k: p for k, p in self.pinholes.items() if p.expires > now}


def _uint(args: Args, name: str, maximum: int) -> int:
    text = args.get(name, "").strip()
    if not text.isdigit() or int(text) > maximum:
        raise PinholeFault(402)
    return int(text)


def _own_address(internal_client: str, client: str, internal_port: int) -> str:
    """`internal_client` as the router keeps it, if the sender `client` may open a pinhole to it."""
    try:
        address = ipaddress.IPv6Address(internal_client.strip())
    except ValueError:
        raise PinholeFault(402) from None
    try:
        sender = ipaddress.ip_address(client.split("%")[0])
    except ValueError:
        sender = None
    if address != sender or internal_port < 1024:
        raise PinholeFault(606)
    return str(address)


def _remote_host(text: str) -> str:
    text = text.strip()
    if text in ("", "*"):
        return ""
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise PinholeFault(402) from None
