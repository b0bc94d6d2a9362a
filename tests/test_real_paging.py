"""Paging a big table on real miniupnpd 2.3.1 after its rows moved between the cached port ranges.

miniupnpd 2.3.1 lists a range holding 129-132 mappings of one protocol as the 128 newest (more
than 132 overflow its buffer and crash it), so the range that grew past 128 hides the owned rows.
The tables are loaded through the lease file, which miniupnpd also keeps up to date: it is the
byte-level witness of what the router holds.
"""

from __future__ import annotations

import os
import time

import pytest

from reconciler import ownership
from reconciler.models import MappingKey, Protocol
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP, Lab

pytestmark = pytest.mark.router

BOTH = f"""\
apiVersion: portctl/v1
owner: lab
defaults: {{internal_client: {LAN_IP}}}
mappings:
  - {{name: keep, external_port: 20000}}
  - {{name: gone, external_port: 20001}}
"""
ONE = "\n".join(BOTH.splitlines()[:-1]) + "\n"


lab = module_lab("pg")


def lines(foreign: list[range]) -> list[str]:
    """Lease-file lines: foreign rows of another client, and this owner's two rows, oldest first."""
    expiry = int(time.time()) + 604800
    out = [f"TCP:{p}:{LAN_IP}:{p}:{expiry}:another app {p}\n" for p in foreign[0]]
    for port, name in ((20000, "keep"), (20001, "gone")):
        out.append(
            f"TCP:{port}:{LAN_IP}:{port}:{expiry}:{ownership.describe('lab', MappingKey(port, Protocol.TCP), name)}\n"
        )
    out += [f"TCP:{p}:{LAN_IP}:{p}:{expiry}:another app {p}\n" for r in foreign[1:] for p in r]
    return out


def load(lab: Lab, rows: list[str]) -> None:
    lab.stop_router()
    for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
        lab.run(lab.rtr, "nft", "flush", "chain", "inet", "filter", chain)
    with open(os.path.join(lab.workdir, "leases"), "w") as f:
        f.writelines(rows)
    lab.start_router(keep_table=True, wait=60 + 3 * len(rows))


def leases(lab: Lab) -> list[str]:
    with open(os.path.join(lab.workdir, "leases")) as f:
        return sorted(f.readlines())


def test_rows_moved_past_128_in_one_range_still_prune_exactly_the_undeclared_row(lab: Lab, tmp_path: str) -> None:
    """After a reshuffle puts 130 rows in one cached range, plan shows the removal and apply deletes exactly it."""
    load(lab, lines([range(10000, 10064), range(40000, 40064)]))
    path = write(tmp_path, BOTH)
    first = lab.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert first.returncode == 0, first.stdout + first.stderr  # read entry by entry; the spread is now cached
    load(lab, lines([range(10000, 10064), range(21000, 21128)]))
    before = leases(lab)
    assert len(before) == 194
    write(tmp_path, ONE)
    plan = lab.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Plan: 0 to add, 0 to change, 1 to remove." in plan.stdout
    assert "20001/tcp" in plan.stdout
    applied = lab.portctl("apply", path, "--auto-approve", "--no-color")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stderr
    gone = [line for line in before if line.startswith("TCP:20001:")]
    assert len(gone) == 1
    assert leases(lab) == [line for line in before if line not in gone]
    assert lab.router_alive()
