"""Descriptions on real miniupnpd: trailing whitespace lost on read-back is not a router cutting descriptions.

miniupnpd 2.3.1 keeps a trailing space (upnpc -l shows it), but the GetListOfPortMappings read of the
IGD v2 lab trims it, so there the read-back differs from what was written by exactly that space.
"""

from __future__ import annotations

import json

import pytest

from reconciler import ownership, quirks
from reconciler.models import MappingKey, Protocol
from tests.helpers import write
from tests.routerlab import Lab

pytestmark = pytest.mark.router

FOREIGN = (6100, "TCP", "another app's mapping")
SPACED = "apiVersion: portctl/v1\nowner: lab\nmappings:\n  - {name: web, external_port: 7101, description: 'proxy '}\n"
LONG = "  - {name: game, external_port: 7102, description: 'well past the first one'}\n"


@pytest.fixture
def clean(lab: Lab) -> Lab:
    """The lab's router holding only one foreign mapping."""
    lab.empty_table().add_foreign(*FOREIGN)
    return lab


def test_trailing_space_teaches_nothing_and_the_next_description_is_written_whole(clean: Lab, tmp_path: str) -> None:
    """A description ending in a space teaches no truncation; the next mapping's description is written whole."""
    foreign = {r for r in clean.table() if r[0] == FOREIGN[0]}
    path = write(tmp_path, SPACED)
    first = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert first.returncode == 0, first.stdout + first.stderr
    spaced = ownership.describe("lab", MappingKey(7101, Protocol.TCP), "web", "proxy ")
    assert {r[4] for r in clean.table() if r[0] == 7101} == {spaced}
    shown = clean.portctl("show", "--json")
    assert shown.returncode == 0, shown.stderr
    learned = json.loads(shown.stdout)["learned"]
    assert learned["quirks"] == {} and learned["description_limit"] == 0
    write(tmp_path, SPACED + LONG)
    second = clean.portctl("apply", path, "--auto-approve", "--no-color")
    assert second.returncode == 0, second.stdout + second.stderr
    whole = ownership.describe("lab", MappingKey(7102, Protocol.TCP), "game", "well past the first one")
    assert {r[4] for r in clean.table() if r[0] == 7102} == {whole}
    again = clean.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r for r in clean.table() if r[0] == FOREIGN[0]} == foreign
    assert quirks.Quirk.TRUNCATES_DESCRIPTIONS.value not in clean.portctl("show").stdout
