"""A saved plan is trusted with nothing: edited, corrupted or another owner's, it writes nothing.

Each test saves a plan with `plan --out`, changes the file, and applies it: one error naming the
file, exit 1, no traceback, and the emulator's table (a foreign row among it) exactly as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.emulator import EmulatorServer
from tests.helpers import FOREIGN, MANIFEST, Run, portctl, snapshot, write

Edit = Callable[[dict[str, Any]], None]
NEIGHBOUR = """\
apiVersion: portctl/v1
owner: neighbour
mappings:
  - name: nas
    external_port: 7000
    internal_client: 192.168.1.40
"""


def saved_plan(tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer) -> tuple[str, dict[str, Any]]:
    """A plan for tests.helpers.MANIFEST saved to a file, and its document."""
    path = os.path.join(tmp_path, "plan.json")
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", server.url, "--out", path)
    assert run.code == 0, run.err
    with open(path, encoding="utf-8") as f:
        return path, json.load(f)


def save(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def refused(capsys: pytest.CaptureFixture[str], server: EmulatorServer, path: str) -> Run:
    """Apply the saved plan at `path`, checking that it wrote nothing and said one thing about `path`."""
    before = snapshot(server)
    run = portctl(capsys, "apply", path, "--router", server.url, "--no-color")
    assert run.code == 1, run.out + run.err
    assert snapshot(server) == before
    assert run.err.startswith(f"error: {path}"), run.err
    assert run.err.count("error:") == 1, run.err
    assert "Traceback" not in run.err
    return run


@pytest.fixture
def router(emulator: EmulatorServer) -> EmulatorServer:
    """The emulator holding one foreign mapping, another client's."""
    port, protocol, client, internal_port, description = FOREIGN
    emulator.router.add(port, protocol, client, internal_port, description)
    return emulator


def test_foreign_mapping_listed_as_removal_is_refused(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """A removal of a foreign mapping added to a saved plan by hand is refused, and the row stays."""
    path, doc = saved_plan(tmp_path, capsys, router)
    [foreign] = doc["foreign"]
    removal = {
        **doc["changes"][0],
        "action": "remove",
        "name": "mine",
        "key": foreign["key"],
        "before": foreign,
        "after": None,
        "reason": "no longer declared",
    }
    doc["changes"].insert(0, removal)
    save(path, doc)
    run = refused(capsys, router, path)
    assert "the router changed since the plan was saved, or the plan was edited" in run.err
    assert "only in the saved plan: remove mine 9999/tcp" in run.err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("internal_client", "192.168.1.66"),
        ("internal_port", 22),
        ("description", "someone else's game server"),
        ("lease", 3600),
        ("remote_host", "198.51.100.1"),
    ],
)
def test_a_changed_field_is_refused(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer, field: str, value: object
) -> None:
    """A saved plan whose add was edited to write something else than its manifest asks is refused."""
    path, doc = saved_plan(tmp_path, capsys, router)
    doc["changes"][0]["after"][field] = value
    save(path, doc)
    run = refused(capsys, router, path)
    assert "only in the saved plan: add web 8080/tcp" in run.err
    assert "only in a plan made now: add web 8080/tcp" in run.err


def test_another_owners_mapping_is_not_removed_through_an_edited_owner(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer
) -> None:
    """A saved plan edited to another owner, removing that owner's mapping, is refused."""
    neighbour = write(tmp_path, NEIGHBOUR, "neighbour.yaml")
    assert portctl(capsys, "apply", neighbour, "--router", router.url, "--auto-approve").code == 0
    path, doc = saved_plan(tmp_path, capsys, router)
    theirs = next(m for m in doc["foreign"] if m["key"]["external_port"] == 7000)
    doc["owner"] = "neighbour"
    doc["changes"] = [
        {**doc["changes"][0], "action": "remove", "name": "nas", "key": theirs["key"], "before": theirs, "after": None}
    ]
    save(path, doc)
    run = refused(capsys, router, path)
    assert "the saved plan is for owner 'neighbour', its manifest for 'test'" in run.err
    assert any(row[0] == 7000 for row in snapshot(router))


def _set(*where: str | int, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for step in where[:-1]:
            node = node[step]
        node[where[-1]] = value

    return edit


def _drop(name: str) -> Edit:
    return lambda doc: doc.pop(name)


MALFORMED: dict[str, tuple[Edit, str]] = {
    "port out of range": (_set("changes", 0, "key", "external_port", value=70000), "changes[0].key.external_port"),
    "port as text": (_set("changes", 0, "after", "internal_port", value="80"), "changes[0].after.internal_port"),
    "port with a fraction": (_set("changes", 0, "key", "external_port", value=8080.5), "not valid JSON"),
    "absurd lease": (_set("changes", 0, "after", "lease", value=10**30), "changes[0].after.lease"),
    "negative lease": (_set("table", 0, "lease", value=-1), "table[0].lease"),
    "enabled as text": (_set("changes", 0, "after", "enabled", value="no"), "changes[0].after.enabled"),
    "terminal escape": (_set("changes", 0, "name", value="web\x1b]0;owned\x07"), "changes[0].name: holds control"),
    "lone surrogate": (_set("changes", 0, "name", value="\ud800"), "changes[0].name: holds control"),
    "unknown action": (_set("changes", 0, "action", value="wipe"), "changes[0].action: 'wipe' is not one of"),
    "unknown protocol": (_set("changes", 0, "key", "protocol", value="ICMP"), "changes[0].key.protocol"),
    "changes not a list": (_set("changes", value="everything"), "changes: expected a list"),
    "a change not an object": (_set("changes", 0, value=7), "changes[0]: expected an object"),
    "key unlike its row": (_set("changes", 0, "after", "key", "external_port", value=22), "changes[0].after.key"),
    "missing owner": (_drop("owner"), "owner: missing"),
    "missing manifest": (_drop("manifest"), "does not carry its manifest"),
    "manifest not text": (_set("manifest", "text", value=["owner: x"]), "manifest.text: expected text"),
    "manifest invalid": (_set("manifest", "text", value="owner: [\n"), "(the manifest"),
    "guard as text": (_set("guards", "max_deletions", value="none"), "guards.max_deletions"),
    "router missing": (_set("router", value=None), "router: expected an object"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_content_is_one_clear_error(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer, case: str
) -> None:
    """Wrong types, missing fields, unprintable text and absurd numbers: one error naming the field."""
    edit, expected = MALFORMED[case]
    path, doc = saved_plan(tmp_path, capsys, router)
    edit(doc)
    save(path, doc)
    run = refused(capsys, router, path)
    assert expected in run.err


CORRUPT: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "nested too deeply": (lambda raw: b'{"owner": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
    "NaN": (lambda raw: raw.replace(b'"lease": 0', b'"lease": NaN', 1), "NaN is not a number"),
    "a number too long": (lambda raw: raw.replace(b'"lease": 0', b'"lease": 1' + b"0" * 5000, 1), "not valid JSON"),
    "infinite": (lambda raw: raw.replace(b'"lease": 0', b'"lease": 1e999', 1), "not valid JSON"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_file_is_one_clear_error(
    tmp_path: str, capsys: pytest.CaptureFixture[str], router: EmulatorServer, case: str
) -> None:
    """A file that is not JSON a plan can hold is refused in one line, with no traceback."""
    corrupt, expected = CORRUPT[case]
    path, _doc = saved_plan(tmp_path, capsys, router)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(corrupt(raw))
    run = refused(capsys, router, path)
    assert expected in run.err
