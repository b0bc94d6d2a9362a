"""Real miniupnpd killed in the middle of an apply, then started again: the apply reports what it did
and exits non-zero, the next apply converges, traffic flows, and the foreign mapping is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import routerlab
from tests.conftest import require_lab
from tests.helpers import write
from tests.routerlab import LAN_IP, wait_for

pytestmark = pytest.mark.router
MANIFEST = f"""\
apiVersion: portctl/v1
owner: crash
defaults:
  internal_client: {LAN_IP}
mappings:
  - name: games
    external_port: 27015-27074
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[routerlab.Lab]:
    require_lab()
    the_lab = routerlab.Lab(prefix=f"pf{os.getpid() % 1000}").up()
    try:
        yield the_lab
    finally:
        the_lab.down()


def owned(lab: routerlab.Lab) -> set[int]:
    return {row[0] for row in lab.table() if row[4].startswith("pc:")}


def test_miniupnpd_killed_mid_apply_then_restarted(lab: routerlab.Lab, tmp_path: str) -> None:
    lab.add_foreign(9999, "TCP", "someone else")
    foreign = {row for row in lab.table() if row[0] == 9999}
    path = write(tmp_path, MANIFEST)
    cmd = [sys.executable, "-m", "reconciler", "apply", path, "--router", lab.url, "--auto-approve", "--no-color"]
    env = {**os.environ, "PORTCTL_CACHE_DIR": str(tmp_path)}
    apply = subprocess.Popen(["ip", "netns", "exec", lab.lan, *cmd], stdout=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: len(owned(lab)) >= 3, 60, "the apply to make three mappings")
        assert lab._daemon is not None
        lab._daemon.kill()  # SIGKILL: no goodbye, exactly as a crash or a power cut
        lab._daemon.wait(10)
        out = apply.communicate(timeout=60)[0]
    finally:
        apply.kill()
    assert apply.returncode == 1, out
    assert "Run apply again to finish" in out
    assert "not attempted" in out or "cannot reach router" in out
    assert "Traceback" not in out

    lab.start_router(keep_table=True)  # back from its lease file, as after a crash
    again = lab.portctl("apply", path, "--auto-approve", "--no-color")
    assert again.returncode == 0, again.stdout + again.stderr
    assert owned(lab) == set(range(27015, 27075))
    assert {row for row in lab.table() if row[0] == 9999} == foreign
    lab.serve(27020)
    assert lab.reaches(27020)
    plan = lab.portctl("plan", path, "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
