"""`portctl audit`: what in a router's table deserves a look, and `audit --clean`'s plan. Pure, but
for `tcp_answers`, the one probe it may make, which the caller hands in.

Findings, each with a kind, what it concerns (a row's key, a client, a protocol), why, and its rows:
  undeclared     no portctl owner tag: no manifest declares it
  permanent      a permanent lease an unknown app made (IGD v2 routers count "permanent" down from 7 days)
  sensitive      a sensitive port open (policy's list: SSH, Telnet, SMB, RDP, privileged ports), or
                 held by a disabled row, shut now but one enable away from open (the finding says so)
  crowded        many mappings to one LAN host
  no-answer      the LAN host it forwards to does not answer a TCP connect (probed only at private
                 IPv4 addresses the router lists as internal clients, a bounded number, briefly)
  made-through   made through NAT-PMP or PCP (miniupnpd lists such rows in its UPnP table)
  near-limit     close to a known router limit: miniupnpd 2.3.1 aborts a GetListOfPortMappings of
                 more than 128 mappings of one protocol
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import madethrough, ownership, policy
from .durations import format_duration
from .errors import PortctlError
from .models import MAX_LEASE, Action, Change, Plan, PortMapping, Protocol, RouterInfo
from .selection import Selection

KINDS = ("undeclared", "permanent", "sensitive", "crowded", "no-answer", "made-through", "near-limit")
CROWDED = 5  # mappings to one host from which it deserves a look
LISTING_LIMIT = 128  # miniupnpd 2.3.1 aborts a listing of more in one protocol (UPNP-NOTES)
NEAR_LIMIT = 96  # a table this big per protocol is one app's burst away from it
# An IGD v2 router turns a permanent lease into 7 days and counts it down: a lease left above this
# was almost certainly asked as permanent (no app asks for 6 to 7 days).
PERMANENT_AS_WEEK = MAX_LEASE - 86400
MAX_PROBES = 32  # LAN hosts probed at most, each once
PROBE_TIMEOUT = 1.0  # seconds per connect
PROBE_BUDGET = 10.0  # seconds for all probes together

# (address, port) -> does a host answer there (a refused connection is an answer)?
Probe = Callable[[str, int], bool]


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # "31001/tcp", a LAN address, or a protocol
    why: str
    rows: tuple[PortMapping, ...] = ()


@dataclass(frozen=True)
class Audit:
    findings: tuple[Finding, ...]
    rows: int
    probed: tuple[str, ...] = ()  # the LAN addresses a connect was tried to
    unprobed: tuple[str, ...] = field(default=())  # listed, probeable, but past MAX_PROBES or the budget

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def tagged(row: PortMapping) -> bool:
    return row.description.startswith(ownership.PREFIX)


def permanent(row: PortMapping) -> bool:
    return row.lease == 0 or row.lease > PERMANENT_AS_WEEK


def probeable(address: str) -> bool:
    """May the audit connect to `address`? Only a private IPv4 LAN address, never loopback, link-local,
    multicast or anything on the internet."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip.is_private and not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def tcp_answers(address: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Does a host answer a TCP connect to `address`:`port` within `timeout`? A refusal is an answer."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED


def audit(
    table: Sequence[PortMapping],
    probe: Probe | None = None,
    *,
    budget: float = PROBE_BUDGET,
    clock: Callable[[], float] = time.monotonic,
) -> Audit:
    """The findings in `table`. With `probe`, the LAN hosts it lists are asked whether they answer
    (at most MAX_PROBES of them, in parallel, within `budget` seconds by `clock`)."""
    rows = sorted(table, key=lambda r: r.key)
    found: list[Finding] = []
    for row in rows:
        found += _row_findings(row)
    found += _crowded(rows)
    probed: tuple[str, ...] = ()
    unprobed: tuple[str, ...] = ()
    if probe is not None:
        silent, probed, unprobed = _silent(rows, probe, budget, clock)
        found += [
            Finding("no-answer", str(r.key), f"{r.internal_client} does not answer on the LAN (TCP connect)", (r,))
            for r in rows
            if r.internal_client in silent
        ]
    found += _near_limit(rows)
    order = {k: i for i, k in enumerate(KINDS)}
    ordered = sorted(found, key=lambda f: (order[f.kind], f.rows[0].key if f.rows else f.subject, f.subject))
    return Audit(tuple(ordered), len(rows), probed, unprobed)


def _row_findings(row: PortMapping) -> list[Finding]:
    out = []
    subject = str(row.key)
    made = madethrough.label(row)
    if not tagged(row):
        out.append(Finding("undeclared", subject, "no portctl owner tag: no manifest declares it", (row,)))
        if permanent(row):
            left = format_duration(row.lease)
            lease = "permanent" if row.lease == 0 else f"{left} left of the 7 days a router makes of permanent"
            out.append(Finding("permanent", subject, f"a permanent lease ({lease}) made by an unknown app", (row,)))
    exposed = policy.sensitive(row.key.external_port, row.internal_port)
    if exposed and row.enabled:
        out.append(Finding("sensitive", subject, f"{exposed} is open to the internet", (row,)))
    elif exposed:
        why = f"the mapping is disabled: {exposed} is not open now, but would be if it were enabled"
        out.append(Finding("sensitive", subject, why, (row,)))
    if made:
        out.append(Finding("made-through", subject, made, (row,)))
    return out


def _crowded(rows: Sequence[PortMapping]) -> list[Finding]:
    by_client: dict[str, list[PortMapping]] = {}
    for r in rows:
        by_client.setdefault(r.internal_client, []).append(r)
    return [
        Finding("crowded", client, f"{len(held)} mappings forward to this one host", tuple(held))
        for client, held in sorted(by_client.items())
        if len(held) >= CROWDED
    ]


def _near_limit(rows: Sequence[PortMapping]) -> list[Finding]:
    out = []
    for proto in Protocol:
        n = sum(1 for r in rows if r.key.protocol is proto)
        if n >= NEAR_LIMIT:
            out.append(
                Finding(
                    "near-limit",
                    proto.value,
                    f"{n} {proto.value} mappings: miniupnpd 2.3.1 aborts a GetListOfPortMappings of more than "
                    f"{LISTING_LIMIT} in one protocol (fixed in 2.3.4), and other clients (upnpc -L) list that way",
                )
            )
    return out


def _silent(
    rows: Sequence[PortMapping], probe: Probe, budget: float, clock: Callable[[], float]
) -> tuple[set[str], tuple[str, ...], tuple[str, ...]]:
    """The probed hosts that did not answer, those probed, and those left unprobed (over the bound)."""
    ports: dict[str, int] = {}
    for r in rows:
        if probeable(r.internal_client):
            ports.setdefault(r.internal_client, r.internal_port)  # rows are by key: the lowest external port's
    targets = list(ports.items())[:MAX_PROBES]
    skipped = tuple(a for a in ports if a not in dict(targets))
    if not targets:
        return set(), (), skipped
    deadline = clock() + budget
    answered: dict[str, bool] = {}
    pool = ThreadPoolExecutor(max_workers=min(8, len(targets)))
    futures = {address: pool.submit(probe, address, port) for address, port in targets}
    for address, future in futures.items():
        left = deadline - clock()
        try:
            answered[address] = future.result(timeout=max(left, 0.0))
        except Exception:  # a probe past the budget, or one that broke: no verdict, not "silent"
            continue
    # Not waiting for probes past the budget: each ends by itself within its connect timeout.
    pool.shutdown(wait=False, cancel_futures=True)
    late = tuple(a for a, _ in targets if a not in answered)
    silent = {a for a, ok in answered.items() if not ok}
    return silent, tuple(a for a in answered), skipped + late


def why_kept(row: PortMapping, recorded: Callable[[PortMapping], Collection[str]] = lambda row: ()) -> str:
    """Why `audit --clean` may not delete `row`, or "" when it may: it is an owner's, to remove with its
    manifest, or nothing on the row can say it is not (what portctl made through PCP or NAT-PMP, from
    this host or another, looks as any app's does)."""
    if tagged(row):
        return "it carries a portctl owner tag; remove it with its owner's manifest (portctl apply or destroy)"
    owners = recorded(row)
    if owners:
        return (
            f"the ownership inventory here records it as held by {', '.join(sorted(owners))}; remove it with "
            "its owner's manifest (portctl apply or destroy)"
        )
    through = madethrough.made_through(row)
    if through:
        return f"made through {through}: its owner cannot be read from the row, and it lapses by itself unless renewed"
    return ""


def clean_plan(
    table: Sequence[PortMapping],
    selection: Selection,
    router: RouterInfo | None = None,
    recorded: Callable[[PortMapping], Collection[str]] = lambda row: (),
) -> Plan:
    """The plan deleting the rows `selection` picks, and nothing else. Refused (nothing deleted) when
    it picks a row that is, or may be, a portctl owner's (`why_kept`); `recorded` says which owners
    the local inventory records as holding a row."""
    picked = selection.pick(table)
    kept = [(r, why) for r in picked if (why := why_kept(r, recorded))]
    if kept:
        listed = "; ".join(f"{r.key} {r.description!r}: {why}" for r, why in kept)
        raise PortctlError(f"refusing to clean {listed}. Nothing was deleted")
    changes = tuple(Change(Action.REMOVE, "foreign", r.key, r, None, "selected for audit --clean") for r in picked)
    keys = {r.key for r in picked}
    return Plan(
        owner="",
        changes=changes,
        foreign=tuple(r for r in sorted(table, key=lambda r: r.key) if r.key not in keys),
        router=router,
        table=tuple(sorted(table, key=lambda r: r.key)),
    )
