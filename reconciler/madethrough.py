"""Rows miniupnpd lists in its UPnP table for mappings made through PCP or NAT-PMP, told apart by the
descriptions it gives them: `PCP MAP <nonce>` (24 hex digits) and `NAT-PMP <port> <tcp|udp>`.

Neither carries an owner tag, so such a row is foreign unless a PCP nonce proves it this owner's
(ownerstore.TagStore asks that). What this module says is for people: which protocol made a row,
and, where a row forwards to the very host and port a declared mapping does, that the app on that
host took the mapping over (miniupnpd replaces a mapping when the same host asks again through
PCP or NAT-PMP for the same internal port). Pure.
"""

from __future__ import annotations

import re

from .models import PortMapping

PCP = "PCP"
NATPMP = "NAT-PMP"
_PCP = re.compile(r"PCP MAP [0-9a-f]{24}")
_NATPMP = re.compile(r"NAT-PMP [0-9]{1,5} (tcp|udp)")


def made_through(row: PortMapping) -> str:
    """Which protocol made `row` ("PCP", "NAT-PMP"), as miniupnpd describes such rows; "" for any other."""
    if _PCP.fullmatch(row.description):
        return PCP
    if _NATPMP.fullmatch(row.description):
        return NATPMP
    return ""


def label(row: PortMapping) -> str:
    """What made `row`, for plans and `show`: "made through NAT-PMP by 192.168.77.2", "made through
    PCP", or "" for any other row. NAT-PMP maps only for the host that asks, so its internal client
    is who made it; PCP may map for a third party, so it names nobody."""
    through = made_through(row)
    if through == NATPMP:
        return f"made through NAT-PMP by {row.internal_client}"
    return f"made through {through}" if through else ""


def taken_over(row: PortMapping, internal_client: str, internal_port: int) -> str:
    """Why `row` holds a declared port, when it was made through PCP or NAT-PMP for the very host and
    internal port the declared mapping forwards to: the app on that host took the mapping over. ""
    when it is any other row."""
    through = made_through(row)
    if not through or (row.internal_client, row.internal_port) != (internal_client, internal_port):
        return ""
    # NAT-PMP maps only for the asking host; PCP may have been asked by a third party for it.
    who = "by" if through == NATPMP else "for"
    return (
        f"{row.key} was taken over through {through} {who} {row.internal_client}: "
        "the app on that host mapped the same internal port"
    )
