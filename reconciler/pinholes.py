"""What a router enforces on an IPv6 pinhole, checked before anything is written. Pure: no I/O.

miniupnpd (2.3.1, measured; see PROTOCOL-NOTES) opens a pinhole only to the address the request
comes from, even with secure mode off, and only to ports from 1024, for 1 s to 1 day. A pinhole that
breaks one of these would be refused with a bare 606 after the plan was approved; here each breach is
one message naming the pinhole and the remedy, so the admission gate can refuse the plan instead.
`local` is this host's IPv6 addresses (`discovery.local_ipv6`), handed in. Through PCP the same
rules hold (miniupnpd opens a PCP pinhole for the sender alone), and no remote filter can be given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .models import PINHOLE_FIRST_PORT, PINHOLE_MAX_LEASE, Pinhole


def problems(pinhole: Pinhole, local: Sequence[str], through: str = "upnp") -> list[str]:
    """Every reason `pinhole` cannot be opened from this host through `through` ("upnp" or "pcp"),
    each with its remedy; empty when it can."""
    key = pinhole.key
    out = []
    client = _ipv6(key.internal_client)
    if client is None:
        out.append(f"internal client {key.internal_client!r} is not an IPv6 address")
    elif client.compressed != key.internal_client:
        out.append(f"internal client {key.internal_client}: write it as {client.compressed}")
    elif key.internal_client not in local:
        have = ", ".join(local) if local else "none"
        out.append(
            f"internal client {key.internal_client} is not an address of this host (its global IPv6 addresses: "
            f"{have}); the router opens a pinhole only to the address the request comes from, so run portctl "
            "on the host that owns it"
        )
    if not PINHOLE_FIRST_PORT <= key.internal_port <= 65535:
        out.append(
            f"internal port {key.internal_port}: pinholes reach ports {PINHOLE_FIRST_PORT}-65535 only "
            "(the router refuses privileged ports); serve on a port from 1024"
        )
    if not 1 <= pinhole.lease <= PINHOLE_MAX_LEASE:
        out.append(
            f"lease {pinhole.lease}s: a pinhole lasts 1 to {PINHOLE_MAX_LEASE} seconds (1 day) and none is "
            "permanent; ask for at most a day and let portctl renew it"
        )
    if key.remote_host:
        remote = _ipv6(key.remote_host)
        if remote is None:
            out.append(
                f"remote host {key.remote_host!r}: one IPv6 address, or empty for any (the router takes no prefix)"
            )
        elif remote.compressed != key.remote_host:
            out.append(f"remote host {key.remote_host}: write it as {remote.compressed}")
    if not 0 <= key.remote_port <= 65535:
        out.append(f"remote port {key.remote_port}: a port 1-65535, or 0 for any")
    if through == "pcp" and (key.remote_host or key.remote_port):
        out.append(
            "PCP opens a pinhole to every remote host and port (miniupnpd takes no filter for one): drop "
            "remote_host and remote_port, or open it through UPnP (router.protocols: [upnp, ...])"
        )
    return [f"pinhole {key}: {message}" for message in out]


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if isinstance(address, ipaddress.IPv6Address) else None
