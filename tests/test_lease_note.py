"""A person who applies by hand is told when the leases just written run out, and what keeps them alive."""

from __future__ import annotations

import re

import pytest

from reconciler.emulator import EmulatorServer
from tests.helpers import portctl, write

MANIFEST = """\
apiVersion: portctl/v1
owner: test
mappings:
  - {{name: web, external_port: 8080, internal_port: 80, internal_client: 127.0.0.1, lease: {web}}}
  - {{name: game, external_port: 27015, internal_client: 127.0.0.1, lease: {game}}}
"""


def test_apply_names_the_shortest_lease_written_and_the_agent(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MANIFEST.format(web="2h", game="45m"))
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0, run.out + run.err
    said = re.search(r"Leases: the shortest written \(game 27015/tcp\) runs out in 45m, at (\S+ \S+) UTC", run.out)
    assert said, run.out
    assert "(2 leases written)" in run.out and "portctl agent" in run.out


def test_permanent_leases_need_no_note(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MANIFEST.format(web="permanent", game="permanent"))
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0, run.out + run.err
    assert "Leases:" not in run.out
