"""next_free where the router picks the port (PCP, NAT-PMP): the window of ports the plan approves. Pure.

Such a router cannot list its table, so the planner cannot choose a free port itself; it asks for the
declared one and the router may grant another. That is written only where the plan said so in advance
and bounded it: the window runs from the declared port up to NEXT_FREE_WINDOW above it, and stops at
the first port the manifest's policy does not allow (or that is sensitive, unless allow_sensitive),
so every port in it is one the admission gate would admit as the declared one, or that another of the
manifest's mappings declares.

A group of ports (a range, or both protocols) cannot be kept together this way: the router picks each
port alone, so one may move and the next not. Such a group gets no window, and the plan says why: a
moved grant is refused, as with on_conflict: fail.

Nor does a router whose moved grant cannot be told from another mapping (NAT-PMP: RFC 6886 section 3.3
answers a request for an internal port already mapped with that mapping, which may be another
application's or another owner's): keeping it would claim theirs, and a later prune would delete it.
"""

from __future__ import annotations

from collections.abc import Collection

from . import policy
from .models import DesiredMapping, MappingKey, OnConflict, Policy, PortWindow

NEXT_FREE_WINDOW = 100
# The plan's note where the backend cannot keep a moved grant (not Capabilities.keeps_moved_grants).
UNTOLD = (
    "next_free: NAT-PMP answers a request for an internal port already mapped with that mapping, which may be "
    "another application's or another owner's, so a grant of another port is refused (as on_conflict: fail); "
    "use PCP (router.protocols: [pcp]) for next_free"
)


def window(
    d: DesiredMapping, group: int, rules: Policy, reserved: Collection[MappingKey] = ()
) -> tuple[PortWindow | None, str]:
    """The window `d` may be granted in (one of `group` ports of its name), or None and why not ("":
    nothing to say, on_conflict is not next_free). The window stops before a key in `reserved` (the
    manifest's other mappings): a port granted there would push that one off its own."""
    if d.on_conflict != OnConflict.NEXT_FREE:
        return None, ""
    declared = d.key.external_port
    if group > 1:
        return None, (
            f"next_free: the router picks each port alone, so the {group} ports of {d.name} cannot be "
            "kept together; a grant of another port is refused (as on_conflict: fail)"
        )
    if not _admissible(declared, rules, d.allow_sensitive):
        return None, ""  # the declared port itself is refused by the admission gate
    high = declared
    while (
        high < min(declared + NEXT_FREE_WINDOW, 65535)
        and _admissible(high + 1, rules, d.allow_sensitive)
        and MappingKey(high + 1, d.key.protocol) not in reserved
    ):
        high += 1
    if high == declared:
        return None, (
            f"next_free: the policy or another declared mapping leaves no port above {declared} to move to; "
            "a grant of another port is refused (as on_conflict: fail)"
        )
    return PortWindow(declared, high), ""


def breaches(w: PortWindow, port: int, rules: Policy, allow_sensitive: bool) -> list[str]:
    """What is wrong with window `w` for a change at external `port`, as the admission gate judges a
    saved or hand-edited plan: every port in it must be one the manifest allows."""
    out = []
    if port not in w or w.high - w.low > NEXT_FREE_WINDOW:
        out.append(f"the window {w} is not within {NEXT_FREE_WINDOW} above the mapping's port")
    ports = range(w.low, min(w.high, w.low + NEXT_FREE_WINDOW) + 1)
    outside = [p for p in ports if not policy.port_allowed(rules, p)]
    if outside:
        out.append(f"the window {w} reaches {outside[0]}, outside policy.allowed_external_ports")
    exposed = [why for p in ports if (why := policy.sensitive(p, 0))]
    if exposed and not allow_sensitive:
        out.append(f"the window {w} reaches {exposed[0]}; set allow_sensitive: true if that is meant")
    return out


def _admissible(port: int, rules: Policy, allow_sensitive: bool) -> bool:
    return policy.port_allowed(rules, port) and (allow_sensitive or not policy.sensitive(port, 0))
