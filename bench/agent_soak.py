"""Soak the agent: thousands of reconcile cycles against the emulator, with random drift and reboots.

Each cycle disturbs the router the way a homelab does (another app deletes or edits an owned
mapping, adds its own, the router reboots and forgets everything, the WAN address changes, a
commit adds or drops a mapping), asks the running agent's loop for a reconcile, and then checks
that the router holds exactly the declared owned mappings and that every foreign mapping is as it
was. It reports how many cycles converged, how long reconciles took, and whether the agent's
memory stayed flat (RSS and Python heap after warm-up against the end).

    python bench/agent_soak.py [--cycles 3000] [--seed 1]

Only loopback is used: the emulator and the agent's listener are on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any

from reconciler.agent.config import AgentConfig
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.emulator import EmulatorServer, Router
from reconciler.models import MappingKey, Protocol
from reconciler.ownership import describe, is_owned

OWNER = "soak"
CLIENT = "127.0.0.1"
BASE = [("web", 8080, 80), ("ssh", 2222, 22), ("game", 27015, 27015), ("dns", 5353, 53)]


class _NullLog(io.TextIOBase):
    """Counts log lines and keeps none: the soak measures the agent's memory, not the log's."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        return len(s)


def manifest_text(mappings: list[tuple[str, int, int]]) -> str:
    lines = ["apiVersion: portctl/v1", f"owner: {OWNER}", "defaults:\n  lease: 1h", "mappings:"]
    for name, external, internal in mappings:
        # SSH is meant here: a manifest that exposes it must say so (the sensitive-port check).
        meant = ", allow_sensitive: true" if internal == 22 else ""
        row = f"name: {name}, external_port: {external}, internal_port: {internal}, internal_client: {CLIENT}"
        lines.append(f"  - {{{row}{meant}}}")
    return "\n".join(lines) + "\n"


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=300, help="cycles before the memory baseline is taken")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix="portctl-soak-")
    path = os.path.join(workdir, "mappings.yaml")
    declared = list(BASE)
    with open(path, "w") as f:
        f.write(manifest_text(declared))

    server = EmulatorServer(Router(igd_version=2)).start()
    router = server.router
    log = _NullLog()
    # The soak writes the manifest and asks for a pass at once: no settle interval to wait out.
    config = AgentConfig(manifest=path, router=server.url, interval=300, watch=300, events=False, timeout=5.0, settle=0)
    agent = Agent(config, log=JsonLog(log))
    loop = threading.Thread(target=agent.run, daemon=True)
    loop.start()

    foreign: dict[tuple[int, str], tuple[str, int, str]] = {}
    disturbances: dict[str, int] = {}
    failures: list[str] = []
    durations: list[float] = []
    baseline_rss = baseline_heap = 0
    started = time.monotonic()
    for cycle in range(1, args.cycles + 1):  # bounded: the soak stops by itself
        kind = disturb(rng, router, server, declared, foreign, path)
        disturbances[kind] = disturbances.get(kind, 0) + 1
        ticket = agent.request_reconcile()
        if not agent.wait_for(ticket, 30):
            failures.append(f"cycle {cycle}: the reconcile did not finish within 30 s")
            break
        result = agent.status.results[-1]
        durations.append(result.duration)
        problem = check(router, declared, foreign)
        if result.result == "failed" or problem:
            failures.append(f"cycle {cycle} ({kind}): {problem or result.message}")
        if cycle == args.warmup:
            gc.collect()
            tracemalloc.start()
            baseline_rss, baseline_heap = rss_kib(), tracemalloc.get_traced_memory()[0]
    elapsed = time.monotonic() - started
    gc.collect()
    end_rss = rss_kib()
    end_heap = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    agent.stop()
    loop.join(30)
    server.stop()

    cycles = len(durations)
    converged = cycles - len(failures)
    ms = sorted(d * 1000 for d in durations)
    print(f"portctl agent soak: {cycles} reconcile cycles against the emulator (seed {args.seed})")
    print(f"  disturbances: {', '.join(f'{k} {v}' for k, v in sorted(disturbances.items()))}")
    print(f"  converged:    {converged}/{cycles} cycles; foreign mappings untouched in every cycle: {not failures}")
    print(f"  time:         {elapsed:.1f} s, {cycles / elapsed:.0f} cycles/s")
    print(
        f"  reconcile:    median {statistics.median(ms):.1f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )
    print(
        f"  memory:       RSS {baseline_rss / 1024:.1f} MiB after {args.warmup} cycles -> {end_rss / 1024:.1f} MiB "
        f"at the end ({(end_rss - baseline_rss) / 1024:+.1f} MiB); Python heap "
        f"{(end_heap - baseline_heap) / 1024:+.0f} KiB over {cycles - args.warmup} cycles"
    )
    print(f"  log lines:    {log.lines}")
    for failure in failures[:10]:
        print(f"  FAILED {failure}")
    return 0 if not failures else 1


def disturb(
    rng: random.Random,
    router: Router,
    server: EmulatorServer,
    declared: list[tuple[str, int, int]],
    foreign: dict[tuple[int, str], tuple[str, int, str]],
    path: str,
) -> str:
    """One random thing a homelab does to the router (or the repo) between reconciles."""
    kind = rng.choice(["delete", "edit", "foreign", "foreign-gone", "reboot", "wan", "commit", "nothing"])
    owned = [
        e for e in router.rows() if is_owned(OWNER, MappingKey(e.external_port, Protocol(e.protocol)), e.description)
    ]
    if kind == "delete" and owned:
        e = rng.choice(owned)
        router.remove(e.external_port, e.protocol)
    elif kind == "edit" and owned:
        e = rng.choice(owned)  # someone edits an owned mapping's internal port in the router's web page
        router.add(e.external_port, e.protocol, e.internal_client, e.internal_port + 1, e.description, 3600)
    elif kind == "foreign":
        port = rng.randrange(30000, 30100)
        if (port, "UDP") not in foreign:
            foreign[(port, "UDP")] = ("127.0.0.9", port, f"app {port}")
            router.add(port, "UDP", "127.0.0.9", port, f"app {port}")
    elif kind == "foreign-gone" and foreign:
        key = rng.choice(sorted(foreign))
        del foreign[key]
        router.remove(*key)
    elif kind == "reboot":
        server.reboot()
        foreign.clear()  # the router forgot them too
    elif kind == "wan":
        router.external_ip = f"203.0.113.{rng.randrange(1, 255)}"
    elif kind == "commit":
        extra = ("extra", 9000 + rng.randrange(50), 9000)
        declared[:] = BASE + ([extra] if len(declared) == len(BASE) else [])
        with open(path, "w") as f:
            f.write(manifest_text(declared))
    return kind


def check(router: Router, declared: list[tuple[str, int, int]], foreign: dict[tuple[int, str], Any]) -> str:
    rows = {(e.external_port, e.protocol): e for e in router.rows()}
    want = {(ext, "TCP"): (name, internal) for name, ext, internal in declared}
    for key, (name, internal) in want.items():
        e = rows.get(key)
        expected = describe(OWNER, MappingKey(key[0], Protocol.TCP), name)
        if e is None or e.internal_port != internal or e.description != expected:
            return f"{key[0]}/{key[1].lower()} is not as declared: {e}"
    for key, (client, internal, description) in foreign.items():
        e = rows.get(key)
        if e is None or (e.internal_client, e.internal_port, e.description) != (client, internal, description):
            return f"foreign {key} was changed: {e}"
    strays = set(rows) - set(want) - set(foreign)
    return f"unexpected rows {sorted(strays)}" if strays else ""


if __name__ == "__main__":
    sys.exit(main())
