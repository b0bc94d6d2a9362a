"""The manifest's `pinholes:` section: what the schema cannot say (file:line problems) and the
DesiredPinholes it builds. Pure: `manifest` hands in the document and the policy.

Addresses are normalised to `ipaddress`' compressed form, the form the inventory keys and the
router's answers use, so `2001:DB8::0002` and `2001:db8::2` are one pinhole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from .durations import parse_duration
from .errors import Problem
from .models import PINHOLE_MAX_LEASE, DesiredPinhole, PinholeKey, Policy, Protocol
from .yamldoc import Document, Path

DEFAULT_LEASE = 3600
HINTS = {
    "internal_client": "an IPv6 address of this host, or auto",
    "remote_host": "one IPv6 address (UPnP takes no prefix), or empty for any",
    "lease": "seconds or a duration such as 30m or 12h, at most 1d",
    "protocol": "tcp, udp or both",
    "name": "1-24 letters, digits, '.', '_' or '-', starting with a letter or digit",
}


def problems(doc: Document, rules: Policy) -> Iterator[Problem]:
    """What is wrong with the pinholes section beyond its shapes (the schema has checked those)."""
    data = doc.data
    pinholes = data.get("pinholes") if isinstance(data, dict) else None
    if not isinstance(pinholes, list):
        return
    names: dict[str, int] = {}
    keys: dict[PinholeKey, str] = {}
    for i, p in enumerate(pinholes):
        if not isinstance(p, dict):
            continue
        at: Path = ("pinholes", i)
        name = p.get("name")
        yield from doc.repeated_name(at, name, names)
        lease = p.get("lease")
        if isinstance(lease, str):
            try:
                seconds = parse_duration(lease)
            except ValueError:
                yield doc.problem((*at, "lease"), f"{lease!r} is not {HINTS['lease']}")
            else:
                if not 1 <= seconds <= PINHOLE_MAX_LEASE:
                    yield doc.problem(
                        (*at, "lease"),
                        f"{lease!r}: a pinhole lasts 1s to 1d and is never permanent; portctl renews it at half",
                    )
        client = p.get("internal_client")
        if isinstance(client, str) and client != "auto":
            address = _ipv6(client)
            if address is None:
                yield doc.problem((*at, "internal_client"), f"{client!r} is not {HINTS['internal_client']}")
            elif not usable(address):
                yield doc.problem((*at, "internal_client"), f"{client} is not a unicast address a pinhole can lead to")
            elif not prefix_allowed(rules, address.compressed):
                yield doc.problem((*at, "internal_client"), f"{client} is outside policy.allowed_ipv6_prefixes")
        remote = p.get("remote_host")
        if isinstance(remote, str) and remote and _ipv6(remote) is None:
            yield doc.problem((*at, "remote_host"), f"{remote!r} is not {HINTS['remote_host']}")
        protocols = _protocols(p.get("protocol", "tcp"))
        if isinstance(p.get("protocol"), str) and not protocols:
            yield doc.problem((*at, "protocol"), f"{p['protocol']!r} is not {HINTS['protocol']}")
        port = p.get("internal_port")
        if not isinstance(name, str) or not isinstance(port, int) or not isinstance(client, str | None):
            continue
        for proto in protocols:
            key = _key(p, proto)
            if key is None:
                break
            if key in keys:
                yield doc.problem(at, f"pinhole {key} is also declared by {keys[key]!r}")
                break
            keys[key] = name


def prefixes(doc: Document, raw: dict[str, Any]) -> tuple[tuple[str, ...], list[Problem]]:
    """policy.allowed_ipv6_prefixes as networks, and what is wrong with them."""
    out: list[str] = []
    wrong: list[Problem] = []
    values = raw.get("allowed_ipv6_prefixes")
    for i, text in enumerate(values if isinstance(values, list) else []):
        if not isinstance(text, str):
            continue  # the schema reports it
        try:
            out.append(str(ipaddress.IPv6Network(text, strict=False)))
        except ValueError:
            wrong.append(
                doc.problem(
                    ("policy", "allowed_ipv6_prefixes", i), f"{text!r} is not an IPv6 prefix such as 2001:db8:77::/64"
                )
            )
    return tuple(out), wrong


def build(doc: Document) -> tuple[DesiredPinhole, ...]:
    """The pinholes a manifest that passed every check declares (`both` is two)."""
    data = doc.data
    out = []
    for i, p in enumerate(data.get("pinholes") or []):
        lease = parse_duration(p.get("lease", DEFAULT_LEASE))
        for proto in _protocols(p.get("protocol", "tcp")):
            key = _key(p, proto)
            assert key is not None  # checked above
            out.append(DesiredPinhole(p["name"], key, lease, doc.where(("pinholes", i))[0]))
    return tuple(out)


def prefix_allowed(rules: Policy, address: str) -> bool:
    if not rules.allowed_ipv6_prefixes:
        return True
    ip = _ipv6(address)
    return ip is not None and any(ip in ipaddress.IPv6Network(net) for net in rules.allowed_ipv6_prefixes)


def usable(address: ipaddress.IPv6Address) -> bool:
    return not (address.is_unspecified or address.is_multicast)


def _key(p: dict[str, Any], proto: Protocol) -> PinholeKey | None:
    """The pinhole's key, addresses compressed; None if an address is none."""
    client = p.get("internal_client", "auto")
    if client != "auto":
        address = _ipv6(client)
        if address is None:
            return None
        client = address.compressed
    remote = p.get("remote_host", "")
    if remote:
        address = _ipv6(remote)
        if address is None:
            return None
        remote = address.compressed
    return PinholeKey(client, p["internal_port"], proto, remote, p.get("remote_port", 0))


def _protocols(value: Any) -> tuple[Protocol, ...]:
    text = value.upper() if isinstance(value, str) else ""
    if text == "BOTH":
        return (Protocol.TCP, Protocol.UDP)
    return (Protocol(text),) if text in ("TCP", "UDP") else ()


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None
