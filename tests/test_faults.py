"""A router that fails in the middle of an apply: the report says what was done, the exit is non-zero,
and the next apply converges from whatever the router holds. The foreign mapping never changes.

The emulator's fault injection does the work and then loses the answer (drop, bare 500, stall past
the client's timeout), or restarts with an empty table (reboot). The real-router version kills
miniupnpd between two writes (tests/test_real_faults.py).
"""

from __future__ import annotations

import pytest

from reconciler.emulator import EmulatorServer, Router
from tests.helpers import FOREIGN, owned_ports, portctl, snapshot, write

MANIFEST = """\
apiVersion: portctl/v1
owner: faults
mappings:
  - name: games
    external_port: 27015-27020
"""


@pytest.mark.parametrize("kind", ["drop", "http-500", "stall", "reboot"])
def test_a_fault_mid_apply_is_reported_and_the_next_apply_converges(
    tmp_path: str, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    with EmulatorServer(Router(igd_version=2)) as server:
        server.stall = 2.0
        server.router.add(*FOREIGN)
        path = write(tmp_path, MANIFEST)
        # From the third add on, the router stays broken for longer than retries can bridge.
        server.router.inject("AddPortMapping", kind, after=2)
        for _ in range(8):
            server.router.inject("AddPortMapping", kind)
        run = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--timeout", "1", "--no-color")
        assert run.code == 1, run.out + run.err
        assert "Traceback" not in run.err
        assert "Run apply again to finish" in run.out
        # The report is true: what it calls done is on the router, and it names a failure.
        done = {int(line.split()[3].split("/")[0]) for line in run.out.splitlines() if line.startswith("  done ")}
        failed = [line for line in run.out.splitlines() if line.startswith("  FAILED ")]
        assert failed and done <= owned_ports(server)
        assert len(done) + len(failed) == 6
        if kind != "reboot":  # a reboot loses the foreign row too: the router's doing, not portctl's
            assert [r for r in snapshot(server) if r[0] == FOREIGN[0]] == [FOREIGN]
        server.router.heal()
        again = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve")
        assert again.code == 0, again.out + again.err
        assert owned_ports(server) == set(range(27015, 27021))
        plan = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode")
        assert plan.code == 0 and "Plan: 0 to add, 0 to change, 0 to remove." in plan.out
        assert all(int(args["NewExternalPort"]) != FOREIGN[0] for _, args in server.router.journal)


def test_a_router_rebooting_mid_apply_loses_earlier_writes_and_the_next_apply_restores_them(
    tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reboot wipes the two mappings already made; the read-back catches it, and the next apply redoes them."""
    with EmulatorServer(Router(igd_version=2)) as server:
        path = write(tmp_path, MANIFEST)
        server.router.inject("AddPortMapping", "reboot", after=2)
        run = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
        assert run.code == 1
        assert len(server.router.rows()) < 6
        again = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve")
        assert again.code == 0
        assert owned_ports(server) == set(range(27015, 27021))


def test_a_router_gone_before_the_read_back_leaves_an_unverified_report(
    tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every write acknowledged, then no answer to the read-back: the report says so and exits 1.

    (A dropped or refused read falls back to another way of reading; a stall past the timeout does not.)"""
    with EmulatorServer(Router(igd_version=2)) as server:
        path = write(tmp_path, MANIFEST)
        server.stall = 2.0
        # The plan's own read (one listing per protocol) passes; the read-back stalls past --timeout.
        server.router.inject("GetListOfPortMappings", "stall", after=2)
        run = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color", "--timeout", "1")
        assert run.code == 1 and "Traceback" not in run.err
        assert "Not verified: the table could not be read back" in run.out
        assert "Apply: 6 done, 0 failed." in run.out
        server.router.heal()
        plan = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode")
        assert plan.code == 0 and owned_ports(server) == set(range(27015, 27021))
