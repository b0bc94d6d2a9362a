"""--format text|json on every command that prints; --json stays a synonym of --format json."""

from __future__ import annotations

import json
import re

import pytest

from reconciler.emulator import EmulatorServer
from tests.helpers import FOREIGN, MANIFEST, owned_ports, portctl, snapshot, write


def test_validate_prints_its_verdict_as_json(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """validate --format json: the file, the verdict, the owner and the row count; --format text is the default."""
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "validate", path, "--format", "json")
    assert run.code == 0
    expected = {"file": path, "valid": True, "owner": "test", "mappings": 5, "pinholes": 0}
    assert json.loads(run.out) == {"format_version": 2, "kind": "validate", **expected}
    assert portctl(capsys, "validate", path, "--json").out == run.out
    assert portctl(capsys, "validate", path, "--format", "text").out == portctl(capsys, "validate", path).out


@pytest.mark.parametrize("command", ["plan", "show"])
def test_format_json_is_what_json_printed(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """plan and show: --format json prints the same document as --json, and --format text the default text."""
    emulator.router.add(*FOREIGN)
    path = write(tmp_path, MANIFEST)
    base = [command, path, "--router", emulator.url]
    as_json = portctl(capsys, *base, "--format", "json")
    assert as_json.code == 0
    # show's document is a snapshot, stamped with when it was read: two runs differ by that alone.
    unstamped = [
        {k: v for k, v in json.loads(r.out).items() if k != "read_at"}
        for r in (as_json, portctl(capsys, *base, "--json"))
    ]
    assert unstamped[0] == unstamped[1]
    # The text says since when the router is up, to the second: two runs may straddle one.
    texts = [
        re.sub(r"Booted: .*", "Booted: ...", portctl(capsys, *args).out) for args in (base, [*base, "--format", "text"])
    ]
    assert texts[0] == texts[1]
    assert ("Booted: ..." in texts[0]) is (command == "show")


def test_apply_and_destroy_print_their_reports_as_json(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply and destroy with --format json: one JSON report each, every change done, the foreign row untouched."""
    emulator.router.add(*FOREIGN)
    foreign = [row for row in snapshot(emulator) if row[0] == FOREIGN[0]]
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--format", "json")
    assert run.code == 0
    applied = json.loads(run.out)
    assert applied["ok"] is True and len(applied["results"]) == 5
    assert owned_ports(emulator) == {8080, 27015, 27016}
    run = portctl(capsys, "destroy", path, "--router", emulator.url, "--auto-approve", "--format", "json")
    assert run.code == 0
    destroyed = json.loads(run.out)
    assert destroyed["ok"] is True and {r["action"] for r in destroyed["results"]} == {"remove"}
    assert owned_ports(emulator) == set()
    assert [row for row in snapshot(emulator) if row[0] == FOREIGN[0]] == foreign


def test_an_unknown_format_is_refused(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--format yaml is not one of the formats: argparse names the choices."""
    with pytest.raises(SystemExit) as exited:
        portctl(capsys, "validate", write(tmp_path, MANIFEST), "--format", "yaml")
    assert exited.value.code == 2
    assert "invalid choice: 'yaml' (choose from" in capsys.readouterr().err
