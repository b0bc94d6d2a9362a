"""The plan codec: a plan written to JSON reads back as the same plan, every field of it."""

from __future__ import annotations

import json
import os
import time

import pytest

from reconciler import api, manifest, ownership, plancodec, quirks
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.models import MappingKey, Plan, Protocol
from tests.helpers import MANIFEST, portctl, write

OWNER = "codec"
# One mapping each router profile below refuses as asked, with the opt-in that lets portctl adapt it.
LEARN = f"""\
apiVersion: portctl/v1
owner: {OWNER}
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    internal_client: 127.0.0.1
    lease: 1h
    remote_host: 198.51.100.7
    allow_permanent: true
    allow_any_remote_host: true
    allow_same_port: true
"""
# ...and beside it a mapping a foreign row blocks (a conflict) and one whose owned row differs (a
# change with fields), under a policy a permanent lease breaks (a refusal).
FULL = (
    LEARN.replace("mappings:\n", "policy: {max_lease: 1d}\nmappings:\n")
    + """\
  - name: game
    external_port: 27015
    internal_client: 127.0.0.1
    lease: 1h
  - name: nas
    external_port: 7000
    internal_client: 127.0.0.1
    lease: 1h
    allow_permanent: true
    protect: true
"""
)


def taught_plan(tmp_path: str, capsys: pytest.CaptureFixture[str], profile: str) -> Plan:
    """The plan for FULL on a router of `profile` that an earlier apply of LEARN taught its need,
    holding a foreign row, a changed owned row, a protected undeclared row (kept) and an undeclared
    row pointing at another host (removed, with a note), planned with a deletion guard it breaks (blocked)."""
    with EmulatorServer(Router(PROFILES[profile])) as server:
        taught = portctl(
            capsys, "apply", write(tmp_path, LEARN, "learn.yaml"), "--router", server.url, "--auto-approve"
        )
        assert taught.code == 1, taught.out + taught.err  # refused, and learned what the router needs
        add = server.router.add
        add(27015, "TCP", "192.168.1.9", 27015, "someone else's game")
        add(7000, "TCP", "127.0.0.1", 7001, ownership.describe(OWNER, MappingKey(7000, Protocol.TCP), "nas"))
        add(
            6000,
            "TCP",
            "127.0.0.1",
            6000,
            ownership.describe(OWNER, MappingKey(6000, Protocol.TCP), "old", protect=True),
        )
        add(6001, "TCP", "192.168.1.77", 6001, ownership.describe(OWNER, MappingKey(6001, Protocol.TCP), "gone"))
        cache = Cache.from_env()
        m = manifest.load(write(tmp_path, FULL), cache)
        with api.session(server.url, cache) as backend:
            return api.plan(m, api.read(backend), max_deletions=0)


@pytest.mark.parametrize("profile", ["permanent-only", "wildcard-remote-only", "same-port-only"])
def test_a_plan_with_every_field_round_trips(tmp_path: str, capsys: pytest.CaptureFixture[str], profile: str) -> None:
    """encode -> JSON text -> decode gives the same Plan, and encoding it again the same document."""
    plan = taught_plan(tmp_path, capsys, profile)
    populated = {
        "changes": plan.changes,
        "foreign": plan.foreign,
        "conflicts": plan.conflicts,
        "kept": plan.kept,
        "router": plan.router,
        "table": plan.table,
        "blocked": plan.blocked,
        "quirks": plan.quirks,
        "desired": plan.desired,
        "refusals": plan.refusals,
        "adapted": [a for c in plan.changes for a in c.adapted],
        "allowed": [a for c in plan.changes for a in c.allowed],
        "fields": [f for c in plan.changes for f in c.fields],
        "note": [c.note for c in plan.changes if c.note],
        "protect": [c for c in plan.changes if c.protect],
    }
    assert [name for name, value in populated.items() if not value] == []
    doc = plancodec.encode(plan)
    again = plancodec.decode(json.loads(json.dumps(doc)))
    assert again == plan
    assert plancodec.encode(again) == doc


def test_plan_out_saves_what_plan_json_prints(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """The saved plan is the plan's JSON document plus its manifest and guards: one encoder for both."""
    emulator.router.add(27015, "TCP", "192.168.1.9", 27015, "someone else's game")
    path, out = write(tmp_path, FULL), os.path.join(tmp_path, "plan.json")
    shown = portctl(capsys, "plan", path, "--router", emulator.url, "--format", "json", "--out", out)
    with open(out, encoding="utf-8") as f:
        saved = json.load(f)
    assert {k: v for k, v in saved.items() if k not in ("manifest", "guards")} == json.loads(shown.out)
    assert saved["conflicts"][0]["name"] == "game" and saved["desired"]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda d: d["conflicts"][0].pop("reason"), "conflicts[0].reason: missing"),
        (lambda d: d["changes"][1]["adapted"][0].update(proven="yes"), "adapted[0].proven: expected true or false"),
        (lambda d: d["refusals"][0].update(key=[8080]), "refusals[0].key: expected an object"),
        (lambda d: d["desired"][0].update(internal_port=70000), "desired[0].internal_port: expected a whole number"),
        (lambda d: d["changes"][0].update(allowed=[7]), "allowed[0]: expected text"),
    ],
)
def test_decoding_names_the_malformed_field(
    tmp_path: str, capsys: pytest.CaptureFixture[str], edit: object, error: str
) -> None:
    """Each new field is read as strictly as the old ones: a wrong one is a Malformed naming it."""
    doc = plancodec.encode(taught_plan(tmp_path, capsys, "permanent-only"))
    assert callable(edit)
    edit(doc)
    with pytest.raises(plancodec.Malformed, match=error.replace("[", r"\[").replace("]", r"\]")):
        plancodec.decode(doc)


def test_a_saved_plan_naming_a_suspected_need_applies(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A plan that lists a suspected need (its meaning and 80 characters of evidence) is saved, read
    back and applied: the reader takes every need text the planner writes."""
    lesson = quirks.Lesson("AddPortMapping answered 402 Invalid Args " + "x" * 80, False, time.time())
    Cache.from_env().remember(emulator.udn, quirks.Learned({quirks.Quirk.PERMANENT_ONLY: lesson}))
    path, out = write(tmp_path, MANIFEST), os.path.join(tmp_path, "plan.json")
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--out", out).code == 0
    with open(out, encoding="utf-8") as f:
        assert len(json.load(f)["quirks"][0]) > 200
    run = portctl(capsys, "apply", out, "--router", emulator.url)
    assert run.code == 0, run.err
    assert {e.external_port for e in emulator.router.rows()} == {8080, 27015, 27016}
