"""SSDP discovery of Internet Gateway Devices (UPnP DA 1.1 section 1.3), done here rather than by
upnpclient, whose discover() always waits its whole timeout, truncates replies and builds a
Device per duplicate answer."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import xmlsafe
from .boot import BOOT_ID_LIMIT
from .numbers import NotANumber, ascii_int

if TYPE_CHECKING:
    from .backends.http import Exchange, Observer
    from .backends.pcp.client import Client, SocketFactory
    from .protocols import Probe

Clock = Callable[[], float]

SSDP_ADDR = ("239.255.255.250", 1900)
SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
)
MAX_REPLY = 2048
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux's value; the socket module does not export it
ROUTE_TABLE = "/proc/net/route"  # the kernel's IPv4 routes, of this network namespace
IPV6_ROUTE = "/proc/net/ipv6_route"  # the kernel's IPv6 routes, of this network namespace
IF_INET6 = "/proc/net/if_inet6"  # the kernel's IPv6 addresses, of this network namespace
_GLOBAL_SCOPE = "00"  # if_inet6's scope column: 00 global, 10 host (loopback), 20 link, 40 site
_TENTATIVE = 0x40  # IFA_F_TENTATIVE: duplicate address detection has not let it be used yet
_DEPRECATED = 0x20  # IFA_F_DEPRECATED: its preferred lifetime is over; new connections avoid it
_TEMPORARY = 0x01  # IFA_F_TEMPORARY: a privacy address (RFC 8981), replaced every day or so


@dataclass(frozen=True)
class Answer:
    location: str
    search_target: str
    server: str  # as the router sent it, made printable
    source: str
    config_id: str = ""  # CONFIGID.UPNP.ORG: changes whenever the router's description does
    boot_id: int | None = None  # BOOTID.UPNP.ORG: changes whenever the router restarts (None: not given)


def m_search(target: str, mx: int = 1) -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_ADDR[0]}:{SSDP_ADDR[1]}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx}\r\n"
        f"ST: {target}\r\n\r\n"
    ).encode()


def parse_message(data: bytes) -> tuple[str, dict[str, str]]:
    """An SSDP datagram's start line (upper-cased) and its headers (names lower-cased)."""
    lines = data.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0].upper(), headers


def parse_reply(
    data: bytes, source: str, *, gateway: str | None = None, subnets: list[ipaddress.IPv4Network] | None = None
) -> Answer | None:
    """A valid answer, or None (`judge_reply` says why)."""
    judged = judge_reply(data, source, gateway=gateway, subnets=subnets)
    return judged if isinstance(judged, Answer) else None


def judge_reply(
    data: bytes, source: str, *, gateway: str | None = None, subnets: list[ipaddress.IPv4Network] | None = None
) -> Answer | str:
    """A valid answer, or why it is not one (for --trace).

    Anything on the LAN can answer SSDP, so the LOCATION is followed only if it is an http URL whose
    host is an address (no name to resolve) that is the responder or the default gateway, and that
    lies on a subnet this host is directly attached to (`subnets`; None skips that check). So an
    answer can never send portctl to loopback, to another host, or off the LAN.
    """
    if len(data) > MAX_REPLY:
        return f"longer than {MAX_REPLY} bytes"
    start, headers = parse_message(data)
    if not start.startswith("HTTP/1.1 200"):
        return "not an HTTP/1.1 200 answer"
    location, target = headers.get("location", ""), headers.get("st", "")
    if target not in SEARCH_TARGETS:
        return "ST is not an Internet Gateway Device"
    if not (location.isascii() and location.isprintable()) or " " in location:
        # urlsplit would quietly strip control characters that the raw string keeps
        return "LOCATION is not printable ASCII"
    try:
        parts = urlsplit(location)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
        host = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return "LOCATION is not an http URL to an IP address"
    if parts.scheme != "http" or str(host) not in (source, gateway) or "@" in parts.netloc:
        # userinfo in a LOCATION only ever serves to disguise the host
        return "LOCATION is not an http URL to the responder or the default gateway"
    if host.is_loopback or host.is_multicast or host.is_unspecified or host.version != 4:
        return "LOCATION is not a LAN IPv4 address"
    if subnets is not None and not any(host in net for net in subnets):
        return "LOCATION is not on a subnet this host is attached to"
    try:
        config_id = str(ascii_int(headers.get("configid.upnp.org", ""), max_digits=8))
    except NotANumber:
        config_id = ""  # optional: without it, a cached description is trusted for its TTL
    return Answer(
        location,
        target,
        xmlsafe.printable(headers.get("server", ""), 200),
        source,
        config_id,
        boot_id(headers.get("bootid.upnp.org", "")),
    )


def boot_id(text: str) -> int | None:
    """A BOOTID.UPNP.ORG header's value: a non-negative 31-bit integer in ASCII digits, else None
    (optional before UDA 1.1; a value that is not one is read as absent, never as a restart)."""
    try:
        value = ascii_int(text, max_digits=10)
    except NotANumber:
        return None
    return value if value < BOOT_ID_LIMIT else None


def ask_boot_id(host: str, location: str, *, port: int = SSDP_ADDR[1], timeout: float = 1.0) -> int | None:
    """The BOOTID the IGD at `location` gives now, asked by one unicast M-SEARCH to `host`; None when
    it gives none or does not answer within `timeout`. Only an answer from `host` whose LOCATION names
    the same host and port as `location` counts."""
    want = urlsplit(location).netloc
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        if sys.platform == "linux":
            # A host with nothing on the SSDP port answers ICMP port unreachable: with IP_RECVERR the
            # unconnected socket reports it at once, instead of the search waiting its whole timeout.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        try:
            for target in SEARCH_TARGETS:
                sock.sendto(m_search(target), (host, port))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data, (source, _) = sock.recvfrom(MAX_REPLY + 1)
                start, headers = parse_message(data[:MAX_REPLY])
                # The LOCATION is compared, never followed: the router is known already.
                if (
                    source == host
                    and start.startswith("HTTP/1.1 200")
                    and headers.get("st") in SEARCH_TARGETS
                    and urlsplit(headers.get("location", "")).netloc == want
                ):
                    return boot_id(headers.get("bootid.upnp.org", ""))
        except (OSError, ValueError):  # timed out, no route, a LOCATION urlsplit refuses: unknown this time
            return None
    return None


def _routes(route_table: str | None) -> list[list[str]]:
    try:
        with open(route_table or ROUTE_TABLE, encoding="ascii") as f:
            return [line.split() for line in f.readlines()[1:]]
    except OSError:
        return []


def _address(hex_le: str) -> str:
    return socket.inet_ntoa(struct.pack("<L", int(hex_le, 16)))


def local_subnets(route_table: str | None = None) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets this host (this network namespace) reaches directly, without a gateway."""
    nets = []
    for row in _routes(route_table):
        # Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if len(row) > 7 and row[1] != "00000000" and row[2] == "00000000":
            nets.append(ipaddress.IPv4Network(f"{_address(row[1])}/{_address(row[7])}", strict=False))
    return nets


def local_ipv6(if_inet6: str | None = None, *, device: str = "") -> list[str]:
    """This host's (this network namespace's) global IPv6 addresses in compressed form, the ones a
    request can leave from and a pinhole can lead to; none where IPv6 is off. With `device`, those on
    that interface alone, stable ones first (see `_stable_first`)."""
    try:
        with open(if_inet6 or IF_INET6, encoding="ascii") as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for row in rows:
        # address (32 hex digits) ifindex prefixlen scope flags name
        if len(row) < 6 or len(row[0]) != 32 or row[3] != _GLOBAL_SCOPE or (device and row[5] != device):
            continue
        try:
            address = ipaddress.IPv6Address(int(row[0], 16))
            flags = int(row[4], 16)
        except ValueError:
            continue
        if not flags & _TENTATIVE and address.compressed not in (a for a, _ in found):
            found.append((address.compressed, flags))
    return _stable_first(found) if device else [a for a, _ in found]


_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


def _stable_first(found: list[tuple[str, int]]) -> list[str]:
    """Addresses neither deprecated nor temporary (privacy extensions) first, then temporary ones, then
    deprecated ones, each in the kernel's order: a pinhole leads to a server, which wants the address
    that stays. Unique-local ones (fc00::/7, which the kernel scopes global; OpenWrt and Fritz!Box LANs
    carry one beside the public prefix) come after all of those: the internet cannot reach them."""
    rank = [
        (ipaddress.IPv6Address(a) in _UNIQUE_LOCAL, bool(flags & _DEPRECATED), bool(flags & _TEMPORARY))
        for a, flags in found
    ]
    return [a for _, (a, _) in sorted(zip(rank, found, strict=True), key=lambda pair: pair[0])]


def default_gateway6(ipv6_route: str | None = None) -> str | None:
    """This host's IPv6 default gateway, the one the kernel prefers (the lowest metric); a link-local
    one (what router advertisements install) with its zone, the route's device: `fe80::1%eth0`. None
    where there is none."""
    try:
        with open(ipv6_route or IPV6_ROUTE, encoding="ascii") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for row in rows:
        # destination, its prefix length, source, its prefix length, next hop, metric, refcnt, use, flags, device
        if len(row) < 10 or row[0] != "0" * 32 or row[1] != "00" or row[4] == "0" * 32:
            continue
        try:
            hop = ipaddress.IPv6Address(int(row[4], 16))
            metric = int(row[5], 16)
        except ValueError:
            continue
        if hop.is_loopback or hop.is_multicast or (best is not None and metric >= best[0]):
            continue
        best = (metric, f"{hop.compressed}%{row[9]}" if hop.is_link_local else hop.compressed)
    return best[1] if best else None


def network_key(arp_table: str = "/proc/net/arp") -> str:
    """Names the network this host is on: its default gateway and that gateway's MAC address, so two
    homes that both use 192.168.1.1 are told apart. "" when there is no default gateway."""
    gateway = default_gateway()
    if not gateway:
        return ""
    try:
        with open(arp_table, encoding="ascii") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        rows = []
    mac = next((row[3] for row in rows if len(row) > 3 and row[0] == gateway), "")
    return f"{gateway}/{mac}" if mac and mac != "00:00:00:00:00:00" else gateway


def default_gateway(route_table: str | None = None) -> str | None:
    """The IPv4 default gateway of this host (of this network namespace), from the kernel's table."""
    for row in _routes(route_table):
        # Destination 0 is the default route; flag 2 is RTF_GATEWAY.
        if len(row) > 3 and row[1] == "00000000" and int(row[3], 16) & 2:
            return _address(row[2])
    return None


def discover(
    timeout: float = 3.0, *, first: bool = False, observe: Observer | None = None, clock: Clock = time.monotonic
) -> list[Answer]:
    """IGDs that answer within `timeout`; with `first`, return as soon as one does.

    The search goes to the default gateway by unicast first (some routers, Eero among them, answer
    nothing else), then to the multicast group. Answers are accepted from any source port.
    `observe` (--trace) sees each M-SEARCH sent and each datagram that answers, followed or not.
    """
    start = clock()
    deadline = start + timeout
    found: dict[str, Answer] = {}
    gateway = default_gateway()
    subnets = local_subnets() or None  # no routing table to read (not Linux): skip that check
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        for destination in ([(gateway, SSDP_ADDR[1])] if gateway else []) + [SSDP_ADDR]:
            for target in SEARCH_TARGETS:
                error = ""
                try:
                    sock.sendto(m_search(target), destination)
                except OSError as exc:
                    error = f"not sent: {exc.strerror or exc}"  # the other destination may still work
                if observe:
                    observe(_searched(destination, target, error))
        while (left := deadline - clock()) > 0:
            sock.settimeout(left)
            try:
                data, (source, port) = sock.recvfrom(MAX_REPLY + 1)
            except TimeoutError:
                break
            judged = judge_reply(data, source, gateway=gateway, subnets=subnets)
            if observe:
                observe(_answered(data, source, port, clock() - start, judged))
            if isinstance(judged, Answer) and judged.location not in found:
                found[judged.location] = judged
                if first:
                    break
    return list(found.values())


def _searched(destination: tuple[str, int], target: str, error: str) -> Exchange:
    from .backends.http import Exchange

    url = f"udp://{destination[0]}:{destination[1]}"
    return Exchange("M-SEARCH", url, target, m_search(target), None, b"", 0.0, error)


def _answered(data: bytes, source: str, port: int, seconds: float, judged: Answer | str) -> Exchange:
    """An answer as --trace shows it: who sent it, when, and the LOCATION followed or why not."""
    from .backends.http import Exchange

    start, headers = parse_message(data[:MAX_REPLY])
    code = start.split(" ")[1] if start.startswith("HTTP/") and " " in start else ""
    status = int(code) if len(code) == 3 and code.isascii() and code.isdigit() else 0
    note = f"LOCATION {judged.location}" if isinstance(judged, Answer) else f"ignored: {judged}"
    url = f"udp://{source}:{port}"
    return Exchange("M-SEARCH", url, headers.get("st", ""), b"", status, data, seconds, note=note)


# -- which protocols the gateway speaks (protocols.py chooses among them) -----------------------


def probes(
    gateway: str | None,
    protocols: Sequence[str],
    *,
    observe: Observer | None = None,
    socket_factory: SocketFactory | None = None,
    clock: Clock = time.monotonic,
) -> dict[str, Probe]:
    """A probe per protocol in `protocols` at `gateway` (UPnP's SSDP also goes to the multicast group,
    as `discover` does; PCP and NAT-PMP are asked of the gateway alone). Without a gateway only SSDP
    can look."""
    from .protocols import NATPMP, PCP, UPNP

    made: dict[str, Probe] = {}
    for protocol in protocols:
        if protocol == UPNP:
            made[UPNP] = upnp_probe(observe)
        elif gateway and protocol == PCP:
            made[PCP] = pcp_probe(gateway, observe=observe, socket_factory=socket_factory, clock=clock)
        elif gateway and protocol == NATPMP:
            made[NATPMP] = natpmp_probe(gateway, observe=observe, socket_factory=socket_factory, clock=clock)
    return made


def upnp_probe(observe: Observer | None = None) -> Probe:
    from .protocols import UPNP, Finding

    def run(deadline: float) -> Finding:
        answers = discover(deadline, first=True, observe=observe)
        if not answers:
            return Finding(UPNP, False, f"no Internet Gateway Device answered SSDP in {deadline:g} s")
        return Finding(UPNP, True, answers[0].location, answers[0].location, answers[0].config_id)

    return run


def pcp_probe(
    gateway: str,
    *,
    observe: Observer | None = None,
    socket_factory: SocketFactory | None = None,
    clock: Clock = time.monotonic,
) -> Probe:
    """PCP ANNOUNCE (RFC 6887 section 14.1): any version 2 answer means PCP; an answer in version 0
    (UNSUPPORTED_VERSION from a NAT-PMP-only server) proves NAT-PMP instead."""
    from .backends.pcp import wire
    from .backends.pcp.errors import UnsupportedVersion
    from .errors import RouterError
    from .protocols import NATPMP, PCP, Finding

    def run(deadline: float) -> Finding:
        try:
            with _client(gateway, deadline, observe, socket_factory, clock) as client:
                answer = client.pcp(wire.AnnounceRequest(client.local_address)).response
        except UnsupportedVersion as exc:
            return Finding(PCP, False, str(exc), proves=NATPMP if exc.server_version == 0 else "")
        except RouterError as exc:
            return Finding(PCP, False, str(exc))
        return Finding(PCP, True, f"epoch {answer.epoch}" + ("" if answer.ok else f", {answer.result_name}"))

    return run


def natpmp_probe(
    gateway: str,
    *,
    observe: Observer | None = None,
    socket_factory: SocketFactory | None = None,
    clock: Clock = time.monotonic,
) -> Probe:
    """NAT-PMP's external-address request (RFC 6886 section 3.2): any answer means NAT-PMP."""
    from .backends.pcp import wire
    from .errors import RouterError
    from .protocols import NATPMP, Finding

    def run(deadline: float) -> Finding:
        try:
            with _client(gateway, deadline, observe, socket_factory, clock) as client:
                answer = client.natpmp(wire.ExternalAddressRequest()).response
        except RouterError as exc:
            return Finding(NATPMP, False, str(exc))
        said = f"external address {answer.external_address}" if answer.ok else answer.result_name
        return Finding(NATPMP, True, f"{said}, epoch {answer.epoch}")

    return run


def _client(
    gateway: str, deadline: float, observe: Observer | None, socket_factory: SocketFactory | None, clock: Clock
) -> Client:
    from .backends.pcp.client import Client, udp_socket
    from .backends.pcp.traced import traced

    factory = socket_factory or udp_socket
    if observe is not None:
        factory = traced(observe, factory, clock)
    return Client(gateway, deadline=deadline, socket_factory=factory, clock=clock)
