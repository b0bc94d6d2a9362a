"""What a manifest allows itself, and the guards on deleting: pure checks, no I/O.

A manifest's `policy` bounds what its mappings may be (which LAN hosts, which external ports, how
long a lease); `manifest` reports breaches of literal values with their file and line, and
`admission.admit` judges the plan's rows as they will be written (an `auto` address, a port
next_free moved to, a lease the router needs permanent).
Sensitive ports are exposed only with `allow_sensitive: true`.
"""

from __future__ import annotations

import ipaddress

from .models import Action, Plan, Policy

# Services whose exposure to the internet is the usual way into a home network.
RISKY_SERVICES = {22: "SSH", 23: "Telnet", 445: "SMB", 3389: "RDP"}


def sensitive(external_port: int, internal_port: int) -> str:
    """Why exposing this mapping needs `allow_sensitive: true`, or "" when it does not."""
    for port in (internal_port, external_port):
        if port in RISKY_SERVICES:
            return f"{RISKY_SERVICES[port]} (port {port})"
    if external_port < 1024:
        return f"privileged port {external_port}"
    return ""


def client_allowed(policy: Policy, address: str) -> bool:
    if not policy.allowed_internal_clients:
        return True
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.IPv4Network(net, strict=False) for net in policy.allowed_internal_clients)


def port_allowed(policy: Policy, port: int) -> bool:
    return not policy.allowed_external_ports or any(lo <= port <= hi for lo, hi in policy.allowed_external_ports)


def lease_allowed(policy: Policy, lease: int) -> bool:
    """lease 0 is permanent, which no max_lease allows."""
    return not policy.max_lease or 0 < lease <= policy.max_lease


def too_many_deletions(plan: Plan, max_deletions: int | None) -> str:
    """Why `plan` breaks --max-deletions (a replace deletes too), or "" when it does not."""
    deletes = sum(1 for c in plan.changes if c.action is Action.REMOVE or c.replace)
    if max_deletions is None or deletes <= max_deletions:
        return ""
    return f"the plan deletes {deletes} mappings, more than --max-deletions {max_deletions}"
