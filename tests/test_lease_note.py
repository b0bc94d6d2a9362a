"""A person who applies by hand is told when the leases just written run out, as the router holds them
(read back after the writes), and what keeps them alive: in the text, the JSON and the markdown."""

from __future__ import annotations

import calendar
import json
import re
import time

import pytest

from reconciler import render
from reconciler.emulator import EmulatorServer
from reconciler.models import Action, ApplyReport, Change, ChangeResult, MappingKey, PortMapping, Protocol
from tests.helpers import portctl, write

MANIFEST = """\
apiVersion: portctl/v1
owner: test
mappings:
  - {{name: web, external_port: 8080, internal_port: 80, internal_client: 127.0.0.1, lease: {web}}}
  - {{name: game, external_port: 27015, internal_client: 127.0.0.1, lease: {game}}}
"""
WEEK = 7 * 86400


def ends_at(out: str) -> float:
    """The wall-clock moment the note names (to the minute, as it prints it)."""
    said = re.search(r"runs out in \S+, at (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", out)
    assert said, out
    return calendar.timegm(time.strptime(said[1], "%Y-%m-%d %H:%M"))


def test_apply_names_the_shortest_lease_written_and_the_agent(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Leases of 2h and 45m: the note names the 45m one (as asked: the router holds it), and the agent."""
    path = write(tmp_path, MANIFEST.format(web="2h", game="45m"))
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0, run.out + run.err
    said = re.search(r"Leases: the shortest written \(game 27015/tcp\) runs out in 45m, at (\S+ \S+) UTC", run.out)
    assert said, run.out
    assert "(2 leases written)" in run.out and "portctl agent" in run.out and "as asked" not in run.out


def test_a_permanent_lease_on_igd_v2_shows_as_ending_in_7_days(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """IGD v2 (miniupnpd, the emulator) holds a "permanent" lease for 7 days: the note says when it ends, and
    that the router holds it for 7d, not permanent as asked."""
    frozen = time.time()
    emulator.router.use_clock(lambda: frozen)  # the 7 days the router lists, not 6d23h59m59s on a busy machine
    path = write(tmp_path, MANIFEST.format(web="permanent", game="permanent"))
    before = time.time()
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    after = time.time()
    assert run.code == 0, run.out + run.err
    assert "runs out in 7d" in run.out and "the router holds it for 7d, not permanent as asked" in run.out
    assert before + WEEK - 60 <= ends_at(run.out) <= after + WEEK


def test_a_permanent_lease_on_igd_v2_ends_in_the_json_and_the_markdown(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`apply --format json` gives the end as `leases_end` (a time), `--format markdown` as the same note."""
    frozen = time.time()
    emulator.router.use_clock(lambda: frozen)
    path = write(tmp_path, MANIFEST.format(web="permanent", game="permanent"))
    before = time.time()
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--format", "json")
    after = time.time()
    assert run.code == 0, run.out + run.err
    end = json.loads(run.out)["leases_end"]
    assert before + WEEK <= end["epoch"] <= after + WEEK
    assert end["time"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end["epoch"]))
    emulator.router.remove(8080, "TCP")  # one to write again, so that the markdown apply writes something
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--format", "markdown")
    assert run.code == 0, run.out + run.err
    assert "Leases: the shortest written (web 8080/tcp) runs out in 7d" in run.out
    assert "the router holds it for 7d, not permanent as asked" in run.out


def test_a_true_permanent_lease_on_igd_v1_needs_no_note(
    tmp_path: str, emulator_v1: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An IGD v1 router holds a permanent lease as permanent: nothing ends, no note, `leases_end` null."""
    path = write(tmp_path, MANIFEST.format(web="permanent", game="permanent"))
    run = portctl(capsys, "apply", path, "--router", emulator_v1.url, "--auto-approve", "--no-color")
    assert run.code == 0, run.out + run.err
    assert "Leases:" not in run.out
    emulator_v1.router.remove(8080, "TCP")
    run = portctl(capsys, "apply", path, "--router", emulator_v1.url, "--auto-approve", "--format", "json")
    assert run.code == 0, run.out + run.err
    assert json.loads(run.out)["leases_end"] is None


def _written(lease: int, listed: int | None) -> ApplyReport:
    """A report of one add asking for `lease`, the table read back listing it with `listed` (None: not read)."""
    key = MappingKey(8080, Protocol.TCP)
    want = PortMapping(key, "192.168.1.10", 80, "pc:x web", lease)
    table = None if listed is None else (PortMapping(key, "192.168.1.10", 80, "pc:x web", listed),)
    return ApplyReport((ChangeResult(Change(Action.ADD, "web", key, None, want), True),), table)


@pytest.mark.parametrize(
    ("asked", "listed", "held"),
    [
        (7200, 3600, 3600),  # the router shortened it: what it holds
        (0, WEEK, WEEK),  # IGD v2's "permanent"
        (0, WEEK - 3, WEEK),  # the same, counted down by the apply's seconds
        (0, WEEK - 3600, WEEK - 3600),  # a permanent lease the router holds for less than IGD v2's longest
        (7200, 7198, 7200),  # counted down by the apply's seconds: as asked
        (7200, None, 7200),  # the table could not be read back: as asked
        (7200, 0, 7200),  # listed as 0 by a router that counts no leases: the end asked for, the safe side
    ],
)
def test_the_lease_held_is_the_one_read_back(asked: int, listed: int | None, held: int) -> None:
    """The note's lease is the one the table read back lists, but for the seconds the apply took to count."""
    end = render.shortest_lease(_written(asked, listed))
    assert end is not None and end.seconds == held
    assert ("as asked" in render.leases_text(_written(asked, listed), 0.0)) == (held != asked)


def test_no_note_where_the_router_holds_the_lease_permanent() -> None:
    """A permanent lease the table lists as permanent ends never: no note."""
    assert render.shortest_lease(_written(0, 0)) is None and render.leases_text(_written(0, 0), 0.0) == ""
