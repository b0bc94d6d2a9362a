"""Real miniupnpd: apply's lease note tells the lease the router holds, as upnpc lists it. miniupnpd holds
a "permanent" lease for 7 days (UPNP-NOTES.md), whether it describes itself as IGD v2 or as v1: the note
and `leases_end` say when it ends. (A router that holds it permanent gets no note: tests/test_lease_note.py.)"""

from __future__ import annotations

import json
import time

import pytest

from reconciler.models import MAX_LEASE
from tests.helpers import write
from tests.labfixtures import IGD_VERSIONS, module_lab
from tests.routerlab import LAN_IP, Lab

pytestmark = pytest.mark.router

MANIFEST = f"""\
apiVersion: portctl/v1
owner: leases
mappings:
  - {{name: web, external_port: 18080, internal_port: 8000, internal_client: {LAN_IP}, lease: permanent}}
"""

lab = module_lab("lq", IGD_VERSIONS)


@pytest.fixture
def empty(lab: Lab) -> Lab:
    return lab.empty_table()


def listed_lease(lab: Lab, port: int) -> int:
    """The lease upnpc lists for `port` (the last field of its row): the independent witness."""
    rows = [line.split() for line in lab.upnpc("-l").stdout.splitlines()]
    [row] = [r for r in rows if len(r) >= 3 and r[0].isdigit() and r[2].startswith(f"{port}->")]
    return int(row[-1])


def test_a_permanent_lease_is_told_as_the_7_days_the_router_holds_it_for(empty: Lab, tmp_path: str) -> None:
    """After apply, upnpc lists the permanent lease as 7 days counting down; `leases_end` is 7 days after the
    write, and the text note says 7d, not permanent as asked."""
    path = write(tmp_path, MANIFEST)
    before = time.time()
    applied = empty.portctl("apply", path, "--auto-approve", "--format", "json")
    after = time.time()
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert MAX_LEASE - 60 < listed_lease(empty, 18080) <= MAX_LEASE
    end = json.loads(applied.stdout)["leases_end"]
    # Counted from the write, between the apply's start and its end; the router lists whole seconds.
    assert before + MAX_LEASE - 1 <= end["epoch"] <= after + MAX_LEASE + (after - before) + 1
    empty.upnpc("-d", "18080", "TCP")
    applied = empty.portctl("apply", path, "--auto-approve", "--no-color")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Leases: the shortest written (web 18080/tcp) runs out in 7d, at " in applied.stdout
    assert "the router holds it for 7d, not permanent as asked" in applied.stdout
