"""A restart of real miniupnpd loses every IPv6 pinhole while portctl's inventory still records them
as held: the next plan sees the router's boot has changed since each was opened, proposes opening
them again, and apply has real IPv6 TCP from the internet side reach the LAN host again."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import pinholeplan
from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab

pytestmark = pytest.mark.router
PORT = 18900
MANIFEST = f"""\
apiVersion: portctl/v1
owner: lab6
mappings: []
pinholes:
  - {{name: web, internal_port: {PORT}}}
"""

lab = module_lab("rb", ipv6=True)


def test_a_restart_that_lost_the_pinhole_is_planned_and_healed(lab: routerlab.Lab, tmp_path: Path) -> None:
    """Open, restart the router (empty), traffic fails; plan proposes the re-open, apply restores traffic,
    and a second plan has no changes."""
    lab.serve6(PORT, lifetime=600)
    assert not lab.reaches6(PORT), "the forward policy must drop IPv6 before any pinhole"
    path = write(tmp_path, MANIFEST)
    r = lab.portctl("apply", path, "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routerlab.eventually(lambda: lab.reaches6(PORT))

    lab.stop_router()
    lab.start_router()  # an empty table, its firewall chain flushed: as a reboot leaves it
    assert routerlab.eventually(lambda: not lab.reaches6(PORT))

    planned = lab.portctl("plan", path, "--detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert pinholeplan.RESTARTED in planned.stdout
    healed = lab.portctl("apply", path, "--auto-approve")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert routerlab.eventually(lambda: lab.reaches6(PORT))

    again = lab.portctl("plan", path, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
