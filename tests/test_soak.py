"""The agent soak (bench/agent_soak.py, `make soak`) keeps working: a short run converges every cycle
and leaves every foreign mapping alone. It went unnoticed once that its manifest had become invalid
(it exposes SSH without saying so) and no cycle converged."""

from __future__ import annotations

import os
import subprocess
import sys

SOAK = os.path.join(os.path.dirname(__file__), "..", "bench", "agent_soak.py")


def test_a_short_soak_converges_every_cycle() -> None:
    run = subprocess.run(
        [sys.executable, SOAK, "--cycles", "40", "--warmup", "10"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "converged:    40/40 cycles; foreign mappings untouched in every cycle: True" in run.stdout, run.stdout
