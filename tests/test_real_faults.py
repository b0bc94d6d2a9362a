"""Real miniupnpd killed in the middle of an apply, then started again: the apply reports what it did
and exits non-zero, the next apply converges, traffic flows, and the foreign mapping is untouched.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP

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


lab = module_lab("pf")


def owned(lab: routerlab.Lab) -> set[int]:
    return {row[0] for row in lab.table() if row[4].startswith("pc:")}


def read_until(stream: int, marker: str, seconds: float) -> str:
    """What `stream` (a raw pipe) carries up to and including `marker`; fails after `seconds`."""
    seen = b""
    deadline = time.monotonic() + seconds
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {seconds} s; got:\n{seen.decode(errors='replace')}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream, 65536)
            assert chunk, f"the output ended before {marker!r}:\n{seen.decode(errors='replace')}"
            seen += chunk
    return seen.decode()


def test_miniupnpd_killed_mid_apply_then_restarted(lab: routerlab.Lab, tmp_path: str) -> None:
    lab.add_foreign(9999, "TCP", "someone else")
    foreign = {row for row in lab.table() if row[0] == 9999}
    # Three mappings made by an earlier apply: the crash happens with part of the manifest written.
    first = lab.portctl(
        "apply",
        write(tmp_path, MANIFEST.replace("27015-27074", "27015-27017"), "first.yaml"),
        "--auto-approve",
        "--no-color",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert owned(lab) == {27015, 27016, 27017}

    # The crash is gated, not raced: apply waits at its prompt (stdin is a terminal), the router is frozen,
    # the answer is given, and the router dies once apply announces its first write. However slow this
    # machine is, that write is in flight or about to be when the router goes.
    path = write(tmp_path, MANIFEST)
    cmd = [sys.executable, "-m", "reconciler", "apply", path, "--router", lab.url, "--no-color"]
    env = {**os.environ, "PORTCTL_CACHE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    terminal, terminal_end = pty.openpty()
    out_read, out_write = os.pipe()
    apply = subprocess.Popen(["ip", "netns", "exec", lab.lan, *cmd], stdin=terminal_end, stdout=out_write, env=env)
    os.close(terminal_end)
    os.close(out_write)
    try:
        out = read_until(out_read, "Only 'yes' will be accepted", 60)
        assert lab._daemon is not None
        lab._daemon.send_signal(signal.SIGSTOP)
        os.write(terminal, b"yes\n")
        out += read_until(out_read, "... add games 27018/tcp", 60)
        lab._daemon.kill()  # SIGKILL: no goodbye, exactly as a crash or a power cut
        lab._daemon.wait(10)
        apply.wait(60)
        with os.fdopen(out_read, "rb") as rest:
            out += rest.read().decode()
    finally:
        apply.kill()
        os.close(terminal)
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
