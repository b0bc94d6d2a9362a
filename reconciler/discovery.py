"""SSDP discovery of Internet Gateway Devices (UPnP DA 1.1 section 1.3), done here rather than by
upnpclient, whose discover() always waits its whole timeout, truncates replies and builds a
Device per duplicate answer."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SSDP_ADDR = ("239.255.255.250", 1900)
SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
)
MAX_REPLY = 2048


@dataclass(frozen=True)
class Answer:
    location: str
    search_target: str
    server: str
    source: str


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


def parse_reply(data: bytes, source: str) -> Answer | None:
    """A valid answer, or None. LOCATION must be http on the host that answered: anything on the
    LAN can answer SSDP, and it must not send us to some other host."""
    if len(data) > MAX_REPLY:
        return None
    start, headers = parse_message(data)
    if not start.startswith("HTTP/1.1 200"):
        return None
    location, target = headers.get("location", ""), headers.get("st", "")
    if target not in SEARCH_TARGETS:
        return None
    parts = urlsplit(location)
    if parts.scheme != "http" or parts.hostname != source:
        return None
    if ipaddress.ip_address(source).is_loopback:
        return None
    return Answer(location, target, headers.get("server", "")[:200], source)


def default_gateway(route_table: str = "/proc/net/route") -> str | None:
    """The IPv4 default gateway of this host (of this network namespace), from the kernel's table."""
    try:
        with open(route_table, encoding="ascii") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    for row in rows:
        # Iface Destination Gateway Flags ...: destination 0 is the default route; flag 2 is RTF_GATEWAY.
        if len(row) > 3 and row[1] == "00000000" and int(row[3], 16) & 2:
            return socket.inet_ntoa(struct.pack("<L", int(row[2], 16)))
    return None


def discover(timeout: float = 3.0, *, first: bool = False) -> list[Answer]:
    """IGDs that answer within `timeout`; with `first`, return as soon as one does.

    The search goes to the default gateway by unicast first (some routers, Eero among them, answer
    nothing else), then to the multicast group. Answers are accepted from any source port.
    """
    deadline = time.monotonic() + timeout
    found: dict[str, Answer] = {}
    gateway = default_gateway()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        for destination in ([(gateway, SSDP_ADDR[1])] if gateway else []) + [SSDP_ADDR]:
            for target in SEARCH_TARGETS:
                try:
                    sock.sendto(m_search(target), destination)
                except OSError:
                    continue  # no route for this one; the other destination may still work
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (source, _port) = sock.recvfrom(MAX_REPLY + 1)
            except TimeoutError:
                break
            answer = parse_reply(data, source)
            if answer and answer.location not in found:
                found[answer.location] = answer
                if first:
                    break
    return list(found.values())
