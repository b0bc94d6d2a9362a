"""Whether a text can name a router: checked where a URL is given (a flag, the environment, the
manifest), so a bad one is one clear message there, not a traceback from deep in a backend. And a
URL's host as sockets take it, a link-local IPv6 address's zone included (RFC 6874)."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, unquote, urlsplit


def problem(url: str, *, raise_as: type[Exception] | None = None) -> str:
    """Why `url` cannot name a router ("" if it can): a host and, if given, a port urllib can read."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it is the check: a port out of range or not a number raises
        why = "" if parts.hostname else "it names no host"
    except ValueError as exc:
        why = str(exc)
    if why and raise_as is not None:
        raise raise_as(f"{url!r} is not a router URL: {why}")
    return why


def host(url: str) -> str:
    """The host of `url` as a socket takes it ("" if none): an IPv6 literal without its brackets, and
    a link-local one's zone (RFC 6874 writes `[fe80::1%25eth0]`) as `fe80::1%eth0`, which getaddrinfo
    reads. urlsplit lowercases the host, and a device name is case-sensitive: the zone is read from
    the netloc as written."""
    parts = urlsplit(url)
    name = parts.hostname or ""
    if "%" not in name:
        return name
    literal = parts.netloc.rpartition("@")[2]
    address, _, zone = unquote(literal[literal.find("[") + 1 : literal.find("]")]).partition("%")
    try:
        return f"{ipaddress.IPv6Address(address).compressed}%{zone}"
    except ValueError:
        return name  # not an address: whoever connects to it says so


def bracketed(host: str) -> str:
    """`host` as a URL's netloc writes it: an IPv6 address in brackets, its zone as `%25` and the
    device name (RFC 6874)."""
    if ":" not in host:
        return host
    address, sep, zone = host.partition("%")
    return f"[{address}%25{quote(zone, safe='')}]" if sep else f"[{address}]"


def same_host(host_in_url: str, ours: str) -> bool:
    """Does a URL's host (as `host` gives it) name the host `ours`? A link-local address written without
    its zone names it on the link `ours` is on: a zone never leaves this host, and the link is ours."""
    if host_in_url == ours:
        return True
    address, sep, _ = ours.partition("%")
    return bool(sep) and host_in_url == address
