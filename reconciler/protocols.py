"""Which protocol to speak to the gateway: UPnP IGD, PCP or NAT-PMP, chosen from an order.

Each protocol has a probe: one short exchange that says whether the gateway speaks it (SSDP for
UPnP, ANNOUNCE for PCP, an external-address request for NAT-PMP). The probes run at once, each
bounded by its own deadline, and the first protocol of the order that the gateway speaks is used.
The default order puts UPnP first because it is the only one that lists the router's table (so
foreign mappings are seen), then PCP (nonces make its mappings this owner's alone), then NAT-PMP.

What the probes found is kept per network in the cache (`networks`, beside the UPnP location that
was kept there before), so a warm run probes nothing: the remembered answer decides whenever every
protocol ahead of its choice in the order was probed and found silent.

A PCP request answered by a NAT-PMP-only server comes back in version 0 (RFC 6887 section 9): that
answer alone proves NAT-PMP, so the choice need not wait for the NAT-PMP probe.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

UPNP, PCP, NATPMP = "upnp", "pcp", "natpmp"
PROTOCOLS: tuple[str, ...] = (UPNP, PCP, NATPMP)
NAMES = {UPNP: "UPnP IGD", PCP: "PCP", NATPMP: "NAT-PMP"}
# A probe that overruns its own deadline by this much is counted silent; probes bound themselves,
# so this only guards against one that hangs.
GRACE = 10.0


class BadOrder(ValueError):
    """A list of protocols that is not one: an unknown name, a repeat, or nothing."""


def parse_order(text: str) -> tuple[str, ...]:
    """`upnp,pcp,natpmp` (comma-separated, any order, each at most once) as a tuple of names."""
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise BadOrder(f"unknown protocol {', '.join(unknown)}: choose from {', '.join(PROTOCOLS)}")
    if len(set(names)) != len(names):
        raise BadOrder(f"{text!r} names a protocol twice")
    if not names:
        raise BadOrder(f"name at least one protocol: {', '.join(PROTOCOLS)}")
    return names


@dataclass(frozen=True)
class Finding:
    """What one probe learned. `proves` names another protocol its answer proves spoken (a PCP
    request answered in NAT-PMP's version 0 proves NAT-PMP)."""

    protocol: str
    spoken: bool
    detail: str = ""  # what the answer said (a location, an epoch, an address), or why none came
    location: str = ""  # UPnP: the root description to follow
    config_id: str = ""  # UPnP: CONFIGID.UPNP.ORG of that answer
    proves: str = ""


Probe = Callable[[float], Finding]


@dataclass(frozen=True)
class Spoken:
    """What the gateway at `gateway` was found to speak, per protocol probed."""

    gateway: str
    findings: Mapping[str, Finding] = field(default_factory=dict)

    def speaks(self, protocol: str) -> bool:
        found = self.findings.get(protocol)
        return (found is not None and found.spoken) or any(f.proves == protocol for f in self.findings.values())

    def known(self, protocol: str) -> bool:
        """Whether it is known that the gateway speaks `protocol` or not (probed, or proved)."""
        return protocol in self.findings or self.speaks(protocol)

    @property
    def spoken(self) -> tuple[str, ...]:
        return tuple(p for p in PROTOCOLS if self.speaks(p))

    def choice(self, order: Sequence[str]) -> str | None:
        """The first protocol of `order` the gateway speaks, None if none or if it is not known yet
        (a protocol ahead of it was not probed)."""
        for protocol in order:
            if self.speaks(protocol):
                return protocol
            if not self.known(protocol):
                return None
        return None

    def settled(self, order: Sequence[str]) -> bool:
        """Whether more answers could no longer change `choice(order)`."""
        return self.choice(order) is not None or all(self.known(p) for p in order)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "probed": {
                p: {"spoken": f.spoken, "detail": f.detail, "location": f.location, "proves": f.proves}
                for p, f in self.findings.items()
            },
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> Spoken | None:
        """The record `to_json` wrote; a record older portctl wrote ({"location": ...}) says UPnP
        at that location; anything unreadable is None (probe again)."""
        if not isinstance(record, Mapping):
            return None
        probed = record.get("probed")
        if not isinstance(probed, Mapping):
            location = record.get("location")
            if not isinstance(location, str) or not location:
                return None
            return cls("", {UPNP: Finding(UPNP, True, location, location)})
        findings = {}
        for protocol, raw in probed.items():
            if protocol not in PROTOCOLS or not isinstance(raw, Mapping):
                return None
            proves = str(raw.get("proves", ""))
            findings[protocol] = Finding(
                protocol,
                raw.get("spoken") is True,
                str(raw.get("detail", ""))[:200],
                str(raw.get("location", ""))[:500],
                proves=proves if proves in PROTOCOLS else "",
            )
        return cls(str(record.get("gateway", "")), findings)


def probe(gateway: str, probes: Mapping[str, Probe], deadline: float, *, order: Sequence[str] | None = None) -> Spoken:
    """Run `probes` at once, each given `deadline` seconds. With `order`, return as soon as the
    answers settle the choice (the UPnP answer, when UPnP comes first); else wait for every probe.

    Each probe runs on a daemon thread: one left running after the choice is made ends by its own
    deadline and never holds the process open.
    """
    answers: queue.Queue[Finding] = queue.Queue()

    def run(protocol: str, probe_one: Probe) -> None:
        try:
            answers.put(probe_one(deadline))
        except Exception as exc:
            answers.put(Finding(protocol, False, f"probe failed: {exc}"))

    for protocol, probe_one in probes.items():
        threading.Thread(target=run, args=(protocol, probe_one), name=f"probe-{protocol}", daemon=True).start()
    findings: dict[str, Finding] = {}
    spoken = Spoken(gateway, findings)
    while len(findings) < len(probes) and not (order is not None and spoken.settled(order)):
        try:
            found = answers.get(timeout=deadline + GRACE)
        except queue.Empty:
            break
        findings[found.protocol] = found
        spoken = Spoken(gateway, dict(findings))
    for protocol in probes:
        if protocol not in findings and (order is None or not spoken.settled(order)):
            findings[protocol] = Finding(protocol, False, f"no answer in {deadline:g} s")
    return Spoken(gateway, dict(findings))
