"""Manifests and saved plans are told apart by what they hold, not by their file names."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from reconciler import planfile
from reconciler.emulator import EmulatorServer
from tests.helpers import FOREIGN, MANIFEST, owned_ports, portctl, snapshot, write

JSON_MANIFEST = json.dumps(yaml.safe_load(MANIFEST), indent=2)
PORTS = {8080, 27015, 27016}


def foreign_rows(server: EmulatorServer) -> list[tuple[object, ...]]:
    return [row for row in snapshot(server) if row[0] == FOREIGN[0]]


def test_a_json_manifest_named_json_works_with_validate_plan_and_apply(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """mappings.json holding a manifest in JSON is validated, planned and applied as the manifest it is."""
    emulator.router.add(*FOREIGN)
    foreign = foreign_rows(emulator)
    path = write(tmp_path, JSON_MANIFEST, "mappings.json")
    run = portctl(capsys, "validate", path)
    assert run.code == 0 and "valid (5 router mappings for owner 'test')" in run.out
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--json")
    assert run.code == 0 and len(json.loads(run.out)["changes"]) == 5
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve")
    assert run.code == 0, run.err
    assert owned_ports(emulator) == PORTS
    assert foreign_rows(emulator) == foreign
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode").code == 0


def test_a_saved_plan_named_yaml_is_still_a_plan(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan --out plan.yaml, then apply plan.yaml: applied as the saved plan, with no approval prompt."""
    emulator.router.add(*FOREIGN)
    foreign = foreign_rows(emulator)
    manifest = write(tmp_path, MANIFEST)
    saved = os.path.join(tmp_path, "plan.yaml")
    assert portctl(capsys, "plan", manifest, "--router", emulator.url, "--out", saved).code == 0
    run = portctl(capsys, "apply", saved, "--router", emulator.url)
    assert run.code == 0, run.err
    assert owned_ports(emulator) == PORTS
    assert foreign_rows(emulator) == foreign


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        (MANIFEST, False),
        (JSON_MANIFEST, False),
        ("{apiVersion: portctl/v1, owner: test, mappings: []}", False),
        ('\ufeff {"format_version": 1, "owner": "x"}', True),
        # A plan carries its manifest's text: the apiVersion in that string does not make it a manifest.
        (json.dumps({"format_version": 1, "manifest": {"text": MANIFEST}}), True),
        (json.dumps({"manifest": {"text": MANIFEST}, "format_version": 1}), True),
        ('{"owner": ' + "[" * 50 + "]" * 50 + "}", True),  # neither: the plan reader says what is wrong
    ],
)
def test_kind_is_told_by_content(tmp_path: str, text: str, plan: bool) -> None:
    """Table: which texts are saved plans, whatever the file is called."""
    for name in ("x.yaml", "x.json", "x"):
        assert planfile.is_plan(write(tmp_path, text, name)) is plan
