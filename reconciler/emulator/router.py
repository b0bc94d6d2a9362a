"""The emulated router's port-mapping table and the IGD actions on it, per WANIPConnection:1/:2."""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from ..errors import UPNP_ERROR_NAMES
from ..models import MAX_LEASE
from .firewall import Firewall
from .profiles import Profile

Args = dict[str, str]
T = TypeVar("T")


class Fault(Exception):
    """A UPnP error the router answers with."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
        self.description = UPNP_ERROR_NAMES.get(code, "ActionFailed")


class WireFault(Exception):
    """Not a UPnP answer: the server answers a bare HTTP 500 ("http-500") or hangs up ("drop")."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class Entry:
    remote_host: str
    external_port: int
    protocol: str
    internal_port: int
    internal_client: str
    enabled: bool
    description: str
    expires: float | None  # None: permanent
    nonce: bytes = b""  # the PCP nonce that made it (only its holder renews or deletes it); b"": not PCP's


class Router:
    """State and semantics only; `server.EmulatorServer` puts it on the wire."""

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        igd_version: int | None = None,
        external_ip: str | None = None,
        secure_mode: bool | None = None,
        connected: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A router that deviates from the spec as `profile` says; the keywords override it."""
        profile = profile or Profile()
        self.profile = replace(
            profile,
            igd_version=profile.igd_version if igd_version is None else igd_version,
            external_ip=profile.external_ip if external_ip is None else external_ip,
            secure_mode=profile.secure_mode if secure_mode is None else secure_mode,
        )
        self.igd_version = self.profile.igd_version
        self.external_ip = self.profile.external_ip
        self.secure_mode = self.profile.secure_mode
        self.connected = connected
        self.clock = clock
        self.entries: list[Entry] = []
        self.booted = clock()
        self.boot_id = 1  # SSDP BOOTID.UPNP.ORG: one more at each restart
        # Called (outside the lock) after every change to the table: the server's GENA eventing.
        self.on_change: list[Callable[[int], None]] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.crashes = 0  # listings that would have killed the daemon (profile list_abort_over)
        self.journal: list[tuple[str, Args]] = []  # every write, in the order the router took them
        self._wire_faults: list[list[Any]] = []  # [action, calls to let through first, kind]
        self._faults: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        # IPv6 pinholes (WANIPv6FirewallControl:1): on the same clock, lost with the table on a restart.
        self.firewall = Firewall(lambda: self.clock())

    # -- test controls ----------------------------------------------------------------------

    def fail_next(self, action: str, code: int) -> None:
        """Answer the next call of `action` with UPnP error `code` (once)."""
        with self._lock:
            self._faults.append((action, code))

    def inject(self, action: str, kind: str, *, after: int = 0) -> None:
        """Let `after` calls of `action` through, then fail the next one on the wire: "drop" (the
        router did the work but hung up before answering), "http-500" (did the work, answered a bare
        500), "stall" (did the work, answered nothing until the client gave up) or "reboot" (the
        router restarted: the table is gone and the call was never done)."""
        with self._lock:
            self._wire_faults.append([action, after, kind])

    def heal(self) -> None:
        """Forget the wire faults still pending: the router works again."""
        with self._lock:
            self._wire_faults.clear()

    def add(
        self,
        port: int,
        protocol: str,
        client: str,
        internal_port: int,
        description: str,
        lease: int = 0,
        *,
        enabled: bool = True,
    ) -> None:
        """Put a row in the table directly, as another client on the LAN would."""
        with self._lock:
            self._store(Entry("", port, protocol, internal_port, client, enabled, description, self._expiry(lease)))
        self._changed()

    def remove(self, port: int, protocol: str) -> bool:
        """Delete a row directly, as another client on the LAN would; False if there was none."""
        with self._lock:
            entry = self._find(port, protocol)
            if entry is not None:
                self.entries.remove(entry)
        if entry is not None:
            self._changed()
        return entry is not None

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Count time on `clock` from now on; every lease keeps its time left, the uptime stays."""
        with self._lock:
            shift = clock() - self.clock()
            for e in self.entries:
                if e.expires is not None:
                    e.expires += shift
            self.booted += shift
            self.clock = clock
            self.firewall.shift(shift)

    def reboot(self, *, uptime_kept: bool = False) -> None:
        """Lose the table, as most routers do on a restart, and start counting uptime again; with
        `uptime_kept`, the uptime goes on (a router whose uptime is its WAN link's, which stayed up):
        only the boot id says it restarted."""
        with self._lock:
            self.entries.clear()
            self.firewall.clear()
            self.boot_id += 1
            if not uptime_kept:
                self.booted = self.clock()

    def epoch(self) -> int:
        """Seconds since the PCP/NAT-PMP state began (RFC 6887 section 8.5): the uptime, or with the
        profile's `epoch_period` the time since the daemon last restarted (keeping its table)."""
        uptime = max(0, int(self.clock() - self.booted))
        period = self.profile.epoch_period
        return uptime % period if period else uptime

    def transact(self, change: Callable[[], T]) -> T:
        """Run `change` on the table under the lock, expired rows gone first; the listeners (GENA)
        hear of it afterwards. A change that raises is a refusal: nobody hears of it."""
        with self._lock:
            self._expire()
            out = change()
        self._changed()
        return out

    def _changed(self) -> None:
        count = len(self.entries)
        for listener in list(self.on_change):
            listener(count)

    def rows(self) -> list[Entry]:
        with self._lock:
            self._expire()
            return list(self.entries)

    # -- actions ---------------------------------------------------------------------------

    @property
    def actions(self) -> dict[str, Callable[[Args, str], Args]]:
        common: dict[str, Callable[[Args, str], Args]] = {
            "GetExternalIPAddress": self._external_ip,
            "GetStatusInfo": self._status,
            "GetConnectionTypeInfo": self._connection_type,
            "GetGenericPortMappingEntry": self._generic,
            "GetSpecificPortMappingEntry": self._specific,
            "AddPortMapping": self._add,
            "DeletePortMapping": self._delete,
        }
        if self.igd_version >= 2:
            common["GetListOfPortMappings"] = self._list
        return common

    def call(self, action: str, args: Args, client: str) -> Args:
        handler = self.actions.get(action)
        if handler is None:
            raise Fault(401)
        with self._lock:
            self.calls[action] += 1
            for i, (name, code) in enumerate(self._faults):
                if name == action:
                    del self._faults[i]
                    raise Fault(code)
            self._expire()
            fault = self._due_fault(action)
            if fault == "reboot":
                self.entries.clear()
                self.firewall.clear()
                self.booted = self.clock()
                self.boot_id += 1
                raise WireFault("drop")
            out = handler(args, client)
            if action in ("AddPortMapping", "DeletePortMapping"):
                self.journal.append((action, dict(args)))
        if action in ("AddPortMapping", "DeletePortMapping"):
            self._changed()
        if fault:
            raise WireFault(fault)
        return out

    def _due_fault(self, action: str) -> str:
        for i, (name, after, kind) in enumerate(self._wire_faults):
            if name == action:
                if after:
                    self._wire_faults[i][1] -= 1
                    return ""
                del self._wire_faults[i]
                return str(kind)
        return ""

    def _external_ip(self, args: Args, client: str) -> Args:
        return {"NewExternalIPAddress": self.external_ip if self.connected else "0.0.0.0"}

    def _status(self, args: Args, client: str) -> Args:
        status = "Connected" if self.connected else "Disconnected"
        uptime = str(int(self.clock() - self.booted))
        return {"NewConnectionStatus": status, "NewLastConnectionError": "ERROR_NONE", "NewUptime": uptime}

    def _connection_type(self, args: Args, client: str) -> Args:
        return {"NewConnectionType": "IP_Routed", "NewPossibleConnectionTypes": "IP_Routed"}

    def _generic(self, args: Args, client: str) -> Args:
        index = _uint(args, "NewPortMappingIndex", 0xFFFF)
        if index >= len(self.entries):
            end = self.profile.index_end
            raise WireFault(end) if isinstance(end, str) else Fault(end)
        return _entry_args(self.entries[index], self.remaining(self.entries[index]), with_key=True)

    def _specific(self, args: Args, client: str) -> Args:
        entry = self._find(_port(args, "NewExternalPort"), _protocol(args))
        if entry is None:
            raise Fault(714)
        return _entry_args(entry, self.remaining(entry), with_key=False)

    def _add(self, args: Args, client: str) -> Args:
        port = _uint(args, "NewExternalPort", 65535)
        if port == 0:
            raise Fault(716)
        protocol = _protocol(args)
        internal_port = _uint(args, "NewInternalPort", 65535)
        if internal_port == 0:
            raise Fault(732 if self.igd_version >= 2 else 402)
        internal_client = args.get("NewInternalClient", "").strip()
        if not internal_client:
            raise Fault(402)
        if self.secure_mode and internal_client != client:
            raise Fault(606 if self.igd_version >= 2 else 718)
        if not _permitted(internal_client, self.profile.permitted_clients):
            raise Fault(606 if self.igd_version >= 2 else 718)
        enabled = _bool(args, "NewEnabled")
        lease = _uint(args, "NewLeaseDuration", 0xFFFFFFFF)
        remote_host = args.get("NewRemoteHost", "").strip()
        self._refuse(port, internal_port, lease, remote_host)
        existing = self._find(port, protocol)
        if existing is not None and existing.internal_client != internal_client:
            raise Fault(718)
        description = args.get("NewPortMappingDescription", "")
        if self.profile.description_limit:
            description = description[: self.profile.description_limit]
        self._store(
            Entry(
                remote_host, port, protocol, internal_port, internal_client, enabled, description, self._expiry(lease)
            )
        )
        return {}

    def _refuse(self, port: int, internal_port: int, lease: int, remote_host: str) -> None:
        """The profile's refusals of an otherwise valid AddPortMapping, most general first."""
        p = self.profile
        for code, applies in (
            (p.add_error, True),
            (0 if self.connected else 501, True),
            (p.specific_port_error, True),
            (p.below_1024_error, port < 1024),
            (p.finite_lease_error, lease != 0),
            (p.permanent_lease_error, lease == 0),
            (p.different_ports_error, port != internal_port),
            (p.remote_host_error, bool(remote_host)),
        ):
            if code and applies:
                raise Fault(code)

    def _delete(self, args: Args, client: str) -> Args:
        entry = self._find(_port(args, "NewExternalPort"), _protocol(args))
        if entry is None:
            raise Fault(714)
        if self.secure_mode and entry.internal_client != client:
            raise Fault(606 if self.igd_version >= 2 else 714)
        self.entries.remove(entry)
        return {}

    def _list(self, args: Args, client: str) -> Args:
        if self.profile.list_resets:
            raise WireFault("drop")
        start = _uint(args, "NewStartPort", 65535)
        end = _uint(args, "NewEndPort", 65535)
        if start > end:
            raise Fault(733)
        protocol = _protocol(args)
        manage = _bool(args, "NewManage")
        limit = _uint(args, "NewNumberOfPorts", 0xFFFF) or 0xFFFF
        rows = sorted(
            (
                e
                for e in self.entries
                if e.protocol == protocol
                and start <= e.external_port <= end
                and (manage or e.internal_client == client)
            ),
            key=lambda e: e.external_port,
        )
        if self.profile.list_abort_over and len(rows) > self.profile.list_abort_over:
            # NewNumberOfPorts is no protection: the daemon dies and comes back with nothing.
            self.crashes += 1
            self.entries.clear()
            self.booted = self.clock()
            raise WireFault("drop")
        if self.profile.list_cap:
            # Table order, newest first (miniupnpd walks its rule list): a capped page is not the lowest ports.
            age = {id(e): i for i, e in enumerate(self.entries)}
            rows = sorted(rows, key=lambda e: age[id(e)], reverse=True)[: self.profile.list_cap]
        rows = rows[:limit]
        if not rows:
            raise Fault(730)
        body = "".join(
            "<p:PortMappingEntry>"
            + "".join(f"<p:{k}>{escape(v)}</p:{k}>" for k, v in _listing_fields(e, self.remaining(e)).items())
            + "</p:PortMappingEntry>"
            for e in rows
        )
        listing = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<p:PortMappingList xmlns:p="urn:schemas-upnp-org:gw:WANIPConnection">'
            f"{body}</p:PortMappingList>"
        )
        return {"NewPortListing": listing}

    # -- table -----------------------------------------------------------------------------

    def _find(self, port: int, protocol: str) -> Entry | None:
        return next((e for e in self.entries if e.external_port == port and e.protocol == protocol), None)

    def _store(self, entry: Entry) -> None:
        for i, e in enumerate(self.entries):
            if e.external_port == entry.external_port and e.protocol == entry.protocol:
                self.entries[i] = entry
                return
        self.entries.append(entry)

    def _expiry(self, lease: int) -> float | None:
        if self.igd_version >= 2:
            lease = min(lease or MAX_LEASE, MAX_LEASE)  # v2: 0 and anything longer become 7 days
        return self.clock() + lease if lease else None

    def _expire(self) -> None:
        now = self.clock()
        self.entries = [e for e in self.entries if e.expires is None or e.expires > now]

    def remaining(self, entry: Entry) -> int:
        return 0 if entry.expires is None else max(1, round(entry.expires - self.clock()))


def _uint(args: Args, name: str, maximum: int) -> int:
    text = args.get(name, "").strip()
    if not text.isdigit() or int(text) > maximum:
        raise Fault(402)
    return int(text)


def _port(args: Args, name: str) -> int:
    return _uint(args, name, 65535)


def _protocol(args: Args) -> str:
    protocol = args.get("NewProtocol", "")
    if protocol not in ("TCP", "UDP"):
        raise Fault(402)  # the allowed values are exactly "TCP" and "UDP"
    return protocol


def _bool(args: Args, name: str) -> bool:
    value = args.get(name, "").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise Fault(402)
    return value in ("1", "true", "yes")


def _entry_args(e: Entry, remaining: int, *, with_key: bool) -> Args:
    out = {
        "NewInternalPort": str(e.internal_port),
        "NewInternalClient": e.internal_client,
        "NewEnabled": "1" if e.enabled else "0",
        "NewPortMappingDescription": e.description,
        "NewLeaseDuration": str(remaining),
    }
    if with_key:
        out = {
            "NewRemoteHost": e.remote_host,
            "NewExternalPort": str(e.external_port),
            "NewProtocol": e.protocol,
            **out,
        }
    return out


def _listing_fields(e: Entry, remaining: int) -> dict[str, str]:
    return {
        "NewRemoteHost": e.remote_host,
        "NewExternalPort": str(e.external_port),
        "NewProtocol": e.protocol,
        "NewInternalPort": str(e.internal_port),
        "NewInternalClient": e.internal_client,
        "NewEnabled": "1" if e.enabled else "0",
        "NewDescription": e.description,
        "NewLeaseTime": str(remaining),
    }


def _permitted(client: str, networks: tuple[str, ...]) -> bool:
    """Do the permission rules allow `client`? With no rules, every client is allowed."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in networks)
