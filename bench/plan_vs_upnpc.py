"""portctl plan against upnpc -l and upnpc -L, on real miniupnpd, in one run: time, HTTP requests, discovery.

    sudo .venv/bin/python bench/plan_vs_upnpc.py [--sizes 0,100,300] [--repeat 3]   (or: make bench)

It builds the same network namespaces as the real-router tests (LAN host, router running Debian's
miniupnpd, internet host), so every packet stays inside namespaces it created; SSDP is sent only
from the LAN namespace. For each size it restarts the router holding that many mappings per
protocol (written to its lease file, which miniupnpd loads at start), all declared by one manifest,
so the plan is a real no-op diff over every row. Then it times, interleaved, `upnpc -l` (entry by
entry), `upnpc -L` (one GetListOfPortMappings per protocol, the fastest a client can read a table), a
cold `portctl plan` (empty cache) and a warm one, each as the command a user runs, from the LAN host.
`upnpc -L` is run only on tables it can read safely: past paging.PAGE_LIMIT mappings of one protocol
its single listing overflows miniupnpd 2.3.1 (see reconciler/paging.py).

Then, on the same router, bench/pcp_vs_upnp.py times portctl's cold apply, warm plan and warm apply
of one manifest over PCP against the same over UPnP, at the same sizes.

Requests are counted on the router: an nftables counter of TCP SYNs to its HTTP port, which is one
per request because miniupnpd answers every request with `Connection: close` (checked below), and
one of datagrams to its PCP/NAT-PMP port.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import pcp_vs_upnp
from reconciler import ownership, paging
from reconciler.models import MappingKey, Protocol
from tests import routerlab

FIRST_PORT = 20000
OWNER = "bench"


def manifest(count: int) -> str:
    head = f"apiVersion: portctl/v1\nowner: {OWNER}\ndefaults:\n  internal_client: {routerlab.LAN_IP}\nmappings:"
    if not count:
        return head + " []\n"
    return head + f"\n  - name: svc\n    external_port: {FIRST_PORT}-{FIRST_PORT + count - 1}\n    protocol: both\n"


def lease_file(count: int) -> str:
    expiry = int(time.time()) + 604800  # what miniupnpd writes for a permanent mapping
    lines = []
    for proto in Protocol:
        for port in range(FIRST_PORT, FIRST_PORT + count):
            desc = ownership.describe(OWNER, MappingKey(port, proto), "svc")
            lines.append(f"{proto.value}:{port}:{routerlab.LAN_IP}:{port}:{expiry}:{desc}\n")
    return "".join(lines)


class Bench:
    def __init__(self, lab: routerlab.Lab, workdir: str) -> None:
        self.lab, self.workdir = lab, workdir
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PORTCTL_ROUTER")}
        nft = f"""
table inet bench {{
  counter http {{ }}
  counter pcp {{ }}
  chain input {{
    type filter hook input priority -10; policy accept;
    tcp dport {routerlab.HTTP_PORT} tcp flags syn counter name http
    udp dport 5351 counter name pcp
  }}
}}
"""
        subprocess.run(["ip", "netns", "exec", lab.rtr, "nft", "-f", "-"], input=nft.encode(), check=True)

    def requests(self) -> int:
        """HTTP requests and PCP/NAT-PMP datagrams that reached the router since the last call."""
        total = 0
        for counter in ("http", "pcp"):
            out = self.lab.run(self.lab.rtr, "nft", "reset", "counter", "inet", "bench", counter).stdout
            total += int(out.split("packets")[1].split()[0])
        return total

    def timed(
        self, *cmd: str, cache: str = "", timeout: float | None = None
    ) -> tuple[float, int, subprocess.CompletedProcess[str]]:
        self.requests()
        env = {**self.env, "PORTCTL_CACHE_DIR": cache} if cache else self.env
        start = time.perf_counter()
        done = subprocess.run(
            ["ip", "netns", "exec", self.lab.lan, *cmd], capture_output=True, text=True, env=env, timeout=timeout
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return elapsed, self.requests(), done

    def load(self, count: int) -> None:
        """Restart the router holding `count` mappings per protocol."""
        self.lab.stop_router()
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
            self.lab.run(self.lab.rtr, "nft", "flush", "chain", "inet", "filter", chain)
        with open(os.path.join(self.lab.workdir, "leases"), "w") as f:
            f.write(lease_file(count))
        self.lab.start_router(keep_table=True, wait=60 + 3 * count)


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    python = platform.python_version()
    return f"{cpu or platform.processor()}, {os.cpu_count()} cores, Linux {platform.release()}, Python {python}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,100,300", help="mappings per protocol (default 0,100,300)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each command per size (median shown)")
    args = ap.parse_args()
    reason = routerlab.missing_prerequisites()
    if reason:
        print(f"bench needs the real-router lab: {reason}", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="portctl-bench-")
    lab = routerlab.Lab(prefix=f"bn{os.getpid() % 1000}").up()
    python = sys.executable
    rows, ok = [], True
    try:
        bench = Bench(lab, workdir)
        head = lab.run(lab.lan, "curl", "-sI", lab.url, check=False).stdout.lower()
        if "connection: close" not in head:
            print("warning: the router keeps connections open; SYNs undercount requests", file=sys.stderr)
        # Compile portctl's bytecode once, as an installed package has it.
        subprocess.run([python, "-m", "reconciler", "--version"], env=bench.env, capture_output=True, check=True)
        sizes = [int(s) for s in args.sizes.split(",")]
        for count in sizes:
            bench.load(count)
            path = os.path.join(workdir, f"m{count}.yaml")
            with open(path, "w") as f:
                f.write(manifest(count))
            plan = [python, "-m", "reconciler", "plan", path, "--router", lab.url, "--detailed-exitcode"]
            times: dict[str, list[float]] = {"upnpc": [], "upnpc-L": [], "cold": [], "warm": []}
            safe_listing = count <= paging.PAGE_LIMIT
            reqs: dict[str, int] = {}
            for i in range(args.repeat):
                # A run of minutes (upnpc -l, or a cold plan, on a big table) is measured once.
                slow = i > 0 and max(times["upnpc"] + times["cold"]) > 10
                if not slow:
                    t, n, out = bench.timed("upnpc", "-u", lab.url, "-l")
                    listed = rows_listed(out.stdout)
                    if listed != 2 * count:
                        raise SystemExit(f"upnpc -l listed {listed} mappings, expected {2 * count}")
                    times["upnpc"].append(t)
                    reqs["upnpc"] = n
                    if safe_listing:
                        t, n, out = bench.timed("upnpc", "-u", lab.url, "-L")
                        listed = rows_listed(out.stdout)
                        if listed != 2 * count:
                            raise SystemExit(f"upnpc -L listed {listed} mappings, expected {2 * count}")
                        times["upnpc-L"].append(t)
                        reqs["upnpc-L"] = n
                    cache = tempfile.mkdtemp(dir=workdir)
                    t, n, out = bench.timed(*plan, cache=cache)
                    if "Plan: 0 to add, 0 to change, 0 to remove." not in out.stdout:
                        raise SystemExit(f"the plan is not a no-op:\n{out.stdout}")
                    times["cold"].append(t)
                    reqs["cold"] = n
                t, n, out = bench.timed(*plan, cache=cache)
                times["warm"].append(t)
                reqs["warm"] = n
            med = {k: statistics.median(v) for k, v in times.items() if v}
            rows.append((count, med, reqs))
            ok = ok and med["warm"] <= med["upnpc"]
            print(
                f"{count:>4} per protocol: upnpc -l {med['upnpc'] * 1000:8.1f} ms ({reqs['upnpc']} requests)   "
                f"upnpc -L {cell(med, reqs, 'upnpc-L')}   "
                f"plan cold {med['cold'] * 1000:8.1f} ms ({reqs['cold']})   "
                f"plan warm {med['warm'] * 1000:8.1f} ms ({reqs['warm']})   "
                f"upnpc -l/warm {med['upnpc'] / med['warm']:6.2f}x   upnpc -L/warm {over_warm(med, 'upnpc-L')}",
                flush=True,
            )
            # The target is a ratio in every run, not only the median's: show the slowest warm run's too.
            runs = ", ".join(f"{t * 1000:.0f}" for t in times["warm"])
            print(f"      warm runs {runs} ms; upnpc -l / slowest warm {med['upnpc'] / max(times['warm']):.2f}x")
        applies = []
        for count in sizes:
            applies.append(pcp_vs_upnp.measure(bench, python, workdir, count, args.repeat))
            print(pcp_vs_upnp.line(applies[-1]), flush=True)
        discovery = measure_discovery(bench, python, workdir)
        startup = statistics.median(bench.timed(python, "-c", "pass")[0] for _ in range(5))
        alive = lab.router_alive()
    finally:
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}, miniupnpd 2.3.1 (Debian) in network namespaces")
    print(
        "| per protocol | upnpc -l | requests | upnpc -L | requests | plan, cold | requests | plan, warm | requests "
        "| upnpc -l / warm | upnpc -L / warm |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, med, reqs in rows:
        upnpc, cold, warm = (f"{med[k] * 1000:.0f} ms" for k in ("upnpc", "cold", "warm"))
        ratio = med["upnpc"] / med["warm"]
        cells = [
            str(count),
            upnpc,
            str(reqs["upnpc"]),
            f"{med['upnpc-L'] * 1000:.0f} ms" if "upnpc-L" in med else "unsafe",
            str(reqs.get("upnpc-L", "-")),
            cold,
            str(reqs["cold"]),
            warm,
            str(reqs["warm"]),
            f"{ratio:.2f}x",
            over_warm(med, "upnpc-L").strip(),
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print("portctl over UPnP and over PCP, same manifest, same router (medians):")
    for line in pcp_vs_upnp.table(applies):
        print(line)
    print()
    print(f"of which Python start-up: {startup * 1000:.0f} ms for `python -c pass` in the LAN namespace")
    for line in discovery:
        print(line)
    slower = [str(count) for count, med, _ in rows if med["warm"] > med["upnpc"]]
    print(f"warm plan no slower than upnpc -l at every size: {'yes' if ok else 'no, at ' + ', '.join(slower)}")
    print(f"router still running after the benchmark: {'yes' if alive else 'NO'}")
    return 0 if alive else 1


def cell(med: dict[str, float], reqs: dict[str, int], key: str) -> str:
    if key not in med:
        return "unsafe (would overflow miniupnpd 2.3.1)"
    return f"{med[key] * 1000:8.1f} ms ({reqs[key]})"


def over_warm(med: dict[str, float], key: str) -> str:
    """How many times a warm plan's median `key` took, or n/a where it was not run."""
    return f"{med[key] / med['warm']:6.2f}x" if key in med else "   n/a"


def rows_listed(stdout: str) -> int:
    """Mappings in upnpc's -l or -L output: lines with an arrow, not the header (which starts with "i")."""
    return sum(1 for line in stdout.splitlines() if line.split()[:1] != ["i"] and "->" in line)


def measure_discovery(bench: Bench, python: str, workdir: str) -> list[str]:
    """Time from start to a usable router location: upnpc's SSDP, portctl's, and portctl's remembered one."""
    bench.load(0)
    lines = []
    upnpc = statistics.median(bench.timed("upnpc", "-s")[0] for _ in range(3))
    direct = statistics.median(bench.timed("upnpc", "-u", bench.lab.url, "-s")[0] for _ in range(3))
    lines.append(f"discovery: upnpc -s {upnpc * 1000:.0f} ms, of which SSDP {max(upnpc - direct, 0) * 1000:.0f} ms")
    path = os.path.join(workdir, "m0.yaml")
    plan = [python, "-m", "reconciler", "plan", path]
    cold, warm = [], []
    for _ in range(3):
        cache = tempfile.mkdtemp(dir=workdir)
        cold.append(bench.timed(*plan, cache=cache)[0])
        warm.append(bench.timed(*plan, cache=cache)[0])
    with_router = statistics.median(bench.timed(*plan, "--router", bench.lab.url, cache=cache)[0] for _ in range(3))
    lines.append(
        f"discovery: portctl plan without --router {statistics.median(cold) * 1000:.0f} ms "
        f"(SSDP, first answer wins), {statistics.median(warm) * 1000:.0f} ms with the location remembered "
        f"for this network, {with_router * 1000:.0f} ms with --router"
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
