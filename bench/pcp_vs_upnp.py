"""portctl over PCP against portctl over UPnP, on one real miniupnpd: cold apply, warm plan, warm apply.

Run by bench/plan_vs_upnpc.py (make bench) on its lab, whose miniupnpd speaks UPnP IGD, PCP and
NAT-PMP at once. For each size the same manifest (N mappings per protocol, each its own internal
port of the LAN host, as PCP names a mapping by it) is applied through `--router URL` and through
`--router pcp://ROUTER`, one protocol after the other in each repetition (taking turns going first),
every time on a router restarted with an empty table and a fresh cache that one untimed plan has
introduced to the router (UPnP: its description; PCP: the nonce secret). Timed, as commands run on
the LAN host:
- cold apply: every mapping new;
- warm plan: the next plan, which must be a no-op;
- warm apply: the next apply of the unchanged manifest, which must renew nothing.
After the cold apply the router's own NAT rules are counted, so every mapping was really made.
Requests are what reached the router: HTTP connections (one per request on miniupnpd) and
datagrams to its PCP/NAT-PMP port, counted by nftables in the router's namespace.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol as Interface

from tests import routerlab

FIRST_PORT = 22000  # beside plan_vs_upnpc's own range; the router is emptied before each run anyway
OWNER = "bench-apply"
LEASE = "1h"  # finite: PCP refuses permanent; long enough that the warm runs renew nothing
PROTOCOLS = ("UPnP", "PCP")
RUNS = ("cold apply", "warm plan", "warm apply")
NO_OP = "Plan: 0 to add, 0 to change, 0 to remove."


class Runner(Interface):
    """What plan_vs_upnpc's Bench offers: its lab, an emptied router, a timed command with its requests."""

    lab: routerlab.Lab

    def load(self, count: int) -> None: ...

    def timed(
        self, *cmd: str, cache: str = "", timeout: float | None = None
    ) -> tuple[float, int, subprocess.CompletedProcess[str]]: ...


@dataclass
class Row:
    """One size's measurements: seconds of every run and the requests of the last, per (protocol, run)."""

    count: int
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)

    def median(self, protocol: str, run: str) -> float:
        return statistics.median(self.times[protocol, run])


def manifest(count: int) -> str:
    head = (
        f"apiVersion: portctl/v1\nowner: {OWNER}\n"
        f"defaults: {{internal_client: {routerlab.LAN_IP}, lease: {LEASE}}}\nmappings:"
    )
    if not count:
        return head + " []\n"
    last = FIRST_PORT + count - 1
    return head + f"\n  - name: svc\n    external_port: {FIRST_PORT}-{last}\n    protocol: both\n"


def nat_rules(lab: routerlab.Lab) -> int:
    """The router's own count of port forwards: DNAT rules in miniupnpd's prerouting chain."""
    out = lab.run(lab.rtr, "nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd").stdout
    return sum(1 for line in out.splitlines() if " dnat " in f" {line.strip()} ")


def measure(bench: Runner, python: str, workdir: str, count: int, repeat: int) -> Row:
    """`repeat` rounds of cold apply, warm plan and warm apply, over UPnP then PCP, at `count` per protocol."""
    path = os.path.join(workdir, f"apply{count}.yaml")
    with open(path, "w") as f:
        f.write(manifest(count))
    routers = {"UPnP": bench.lab.url, "PCP": f"pcp://{routerlab.ROUTER_LAN_IP}"}
    # miniupnpd reloads its rules on every write (UPNP-NOTES.md): generous, but a hung run still ends.
    timeout = 120 + 3.0 * count
    row = Row(count)
    for i in range(repeat):
        # Each goes first in every other round, so neither always meets a router just restarted.
        for protocol in PROTOCOLS[:: 1 if i % 2 == 0 else -1]:
            bench.load(0)
            cache = tempfile.mkdtemp(dir=workdir)
            common = ("--router", routers[protocol], "--no-color")
            plan = (python, "-m", "reconciler", "plan", path, *common)
            apply = (python, "-m", "reconciler", "apply", path, *common, "--auto-approve")
            introduced = bench.timed(*plan, cache=cache, timeout=timeout)[2]
            expect(introduced, f"Plan: {2 * count} to add, 0 to change, 0 to remove.", protocol, "first plan")
            for run, cmd, summary in (
                ("cold apply", apply, f"Plan: {2 * count} to add"),
                ("warm plan", plan, NO_OP),
                ("warm apply", apply, NO_OP),
            ):
                elapsed, requests, done = bench.timed(*cmd, cache=cache, timeout=timeout)
                expect(done, summary, protocol, run)
                row.times.setdefault((protocol, run), []).append(elapsed)
                row.requests[protocol, run] = requests
            forwards = nat_rules(bench.lab)
            if forwards != 2 * count:
                raise SystemExit(f"after the {protocol} runs the router forwards {forwards} ports, not {2 * count}")
    return row


def expect(done: subprocess.CompletedProcess[str], summary: str, protocol: str, run: str) -> None:
    if summary not in done.stdout:
        raise SystemExit(f"{protocol} {run}: expected {summary!r}, got:\n{done.stdout}\n{done.stderr}")


def line(row: Row) -> str:
    """One size on one line, as the run goes."""
    cells = [
        f"{run} UPnP {row.median('UPnP', run) * 1000:8.1f} ms ({row.requests['UPnP', run]}) "
        f"PCP {row.median('PCP', run) * 1000:8.1f} ms ({row.requests['PCP', run]}) {ratio(row, run)}"
        for run in RUNS
    ]
    return f"{row.count:>4} per protocol: " + "   ".join(cells)


def ratio(row: Row, run: str) -> str:
    """How many times the PCP median the UPnP median took."""
    return f"{row.median('UPnP', run) / row.median('PCP', run):.2f}x"


def table(rows: Sequence[Row]) -> list[str]:
    out = [
        "| per protocol | run | UPnP | requests | PCP | requests | UPnP / PCP |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for run in RUNS:
            cells = [str(row.count), run]
            for protocol in PROTOCOLS:
                cells += [duration(row.median(protocol, run)), str(row.requests[protocol, run])]
            out.append("| " + " | ".join([*cells, ratio(row, run)]) + " |")
    return out


def duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"
