"""portctl's JSON documents are one family: what plan, apply, show (the snapshot), audit and validate
print on the emulator validates against its schema under schemas/ (resolved offline), every kind of
row included, and a document that breaks the shared shape is rejected by the schema."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.emulator import PROFILES, EmulatorServer, Router
from tests import docschemas
from tests.helpers import portctl, snapshot, write

KEY = {"external_port": 8080, "protocol": "TCP"}
V1 = """\
apiVersion: portctl/v1
owner: docs
prune: true
mappings:
  - {name: web, external_port: 8080, internal_port: 80, internal_client: 127.0.0.1, lease: 1h}
  - {name: ssh, external_port: 2222, internal_port: 2200, internal_client: 127.0.0.1, lease: 1h}
  - {name: old, external_port: 7000, internal_port: 7000, internal_client: 127.0.0.1, lease: 1h}
  - {name: game, external_port: 27015, protocol: udp, internal_client: 127.0.0.1, lease: 10m}
"""
# web edited, old dropped, api added, take takes a foreign port over, clash collides with one.
V2 = """\
apiVersion: portctl/v1
owner: docs
prune: true
mappings:
  - {name: web, external_port: 8080, internal_port: 81, internal_client: 127.0.0.1, lease: 1h}
  - {name: ssh, external_port: 2222, internal_port: 2200, internal_client: 127.0.0.1, lease: 1h}
  - {name: game, external_port: 27015, protocol: udp, internal_client: 127.0.0.1, lease: 10m}
  - {name: api, external_port: 8443, internal_port: 443, internal_client: 127.0.0.1, lease: 1h}
  - {name: take, external_port: 5000, internal_client: 127.0.0.1, lease: 1h, on_conflict: takeover}
"""
CLASH = "  - {name: clash, external_port: 6000, internal_client: 127.0.0.1, lease: 1h}\n"
PINHOLES = """\
apiVersion: portctl/v1
owner: six
mappings: []
pinholes:
  - {name: web, internal_port: 18800}
  - {name: game, internal_client: '::1', internal_port: 27015, protocol: udp, lease: 10m}
"""
NEXT_FREE = """\
apiVersion: portctl/v1
owner: homelab
defaults: {lease: 10m, internal_client: auto}
mappings:
  - {name: web, external_port: 18080, internal_port: 8080, on_conflict: next_free}
"""


def valid(name: str, out: str) -> dict[str, Any]:
    """The document printed, after checking it against schemas/NAME.schema.json."""
    doc = json.loads(out)
    assert docschemas.errors(name, doc) == []
    return doc


class Jump:
    """The emulator's clock: the monotonic one plus what the test jumped over."""

    def __init__(self) -> None:
        self.jumped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.jumped


@pytest.fixture
def drifted(tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A router holding V1 as applied, then: ssh changed behind portctl's back, game's lease past half,
    and two foreign rows where V2 declares take and clash. Returns V2's path and the router's URL."""
    clock = Jump()
    emulator.router.use_clock(clock)
    applied = portctl(capsys, "apply", write(tmp_path, V1, "v1.yaml"), "--router", emulator.url, "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    ssh = next(r for r in snapshot(emulator) if r[0] == 2222)
    emulator.router.add(2222, "TCP", "127.0.0.1", 2201, str(ssh[4]), 3600)
    emulator.router.add(5000, "TCP", "192.168.1.77", 5000, "someone's camera")
    emulator.router.add(6000, "TCP", "192.168.1.78", 6000, "someone's NAS")
    clock.jumped = 360  # game's 10 minutes have 4 left: past half
    return write(tmp_path, V2 + CLASH, "v2.yaml"), emulator.url


def test_a_plan_with_every_kind_of_row_validates(drifted: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """plan --format json with an add, an edit, drift, a replacement, a removal, a renewal, a conflict
    and foreign rows is a plan document the schema accepts."""
    path, url = drifted
    run = portctl(capsys, "plan", path, "--router", url, "--format", "json")
    assert run.code == 1, run.err  # the conflict
    doc = valid("plan", run.out)
    rows = {c["name"]: c for c in doc["changes"]}
    assert {name: c["action"] for name, c in rows.items()} == {
        "web": "change",
        "ssh": "change",
        "game": "renew",
        "api": "add",
        "take": "change",
        "old": "remove",
    }
    assert rows["take"]["replace"] is True
    assert rows["ssh"]["drift"] == "heal" and rows["ssh"]["fields"][0]["field"] == "internal_port"
    assert [(k["name"], k["key"]) for k in doc["conflicts"]] == [("clash", {"external_port": 6000, "protocol": "TCP"})]
    assert {m["description"] for m in doc["foreign"]} >= {"someone's NAS"}
    assert (doc["format_version"], doc["kind"]) == (2, "plan")


def test_a_saved_plan_and_the_apply_report_validate(
    drifted: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan --out saves a plan document (with its manifest and guards); apply --format json prints an
    apply document whose keys are objects, as the plan's are."""
    _, url = drifted
    path = write(tmp_path, V2, "v2-no-clash.yaml")
    saved = str(tmp_path / "plan.json")
    assert portctl(capsys, "plan", path, "--router", url, "--out", saved).code == 0
    valid("plan", Path(saved).read_text())
    before = time.time()
    run = portctl(capsys, "apply", saved, "--router", url, "--format", "json")
    after = time.time()
    assert run.code == 0, run.err
    doc = valid("apply", run.out)
    assert (doc["kind"], doc["ok"]) == ("apply", True)
    assert {"external_port": 8443, "protocol": "TCP"} in [r["key"] for r in doc["results"]]
    assert doc["router"]["location"].startswith(url)
    # The shortest lease this apply wrote is game's renewal, 10m: it ends ten minutes after the apply.
    assert before + 600 <= doc["leases_end"]["epoch"] <= after + 600


def test_show_validate_and_a_plan_from_the_snapshot_validate(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """show prints a snapshot document; validate a validate document; plan --snapshot a plan document
    naming the snapshot's read time as every document writes a time."""
    path = write(tmp_path, V1)
    assert portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve").code == 0
    emulator.router.add(9999, "TCP", "192.168.1.77", 9999, "someone else's game server")
    snap = str(tmp_path / "snap.json")
    printed = portctl(capsys, "show", path, "--router", emulator.url, "--snapshot-out", snap, "--json").out
    shown = valid("snapshot", printed)
    assert shown["kind"] == "snapshot"
    assert {m["owner"] for m in shown["mappings"]} == {"owned", "foreign"}
    checked = valid("validate", portctl(capsys, "validate", path, "--format", "json").out)
    assert (checked["kind"], checked["mappings"]) == ("validate", 4)
    offline = valid("plan", portctl(capsys, "plan", path, "--snapshot", snap, "--format", "json").out)
    assert offline["snapshot"]["read_at"] == shown["read_at"]


def test_audit_and_audit_clean_validate(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit prints an audit document; audit --clean an audit-clean one carrying an apply report."""
    emulator.router.add(3389, "TCP", "192.168.1.77", 3389, "remote desktop")
    emulator.router.add(9999, "TCP", "192.168.1.77", 9999, "someone else's game server")
    base = ["--router", emulator.url, "--format", "json"]
    found = valid("audit", portctl(capsys, "audit", "--no-probe", *base).out)
    assert found["kind"] == "audit" and found["counts"]["sensitive"] == 1
    cleaned = portctl(capsys, "audit", "--clean", "--select", "9999/tcp", "--auto-approve", *base)
    assert cleaned.code == 0, cleaned.err
    doc = valid("audit", cleaned.out)
    assert (doc["kind"], doc["report"]["kind"]) == ("audit-clean", "apply")
    assert [r["key"] for r in doc["report"]["results"]] == [{"external_port": 9999, "protocol": "TCP"}]
    assert [r[0] for r in snapshot(emulator)] == [3389]


@pytest.fixture
def six() -> Iterator[EmulatorServer]:
    with EmulatorServer(Router(), host="::1") as s:
        yield s


def test_pinhole_plans_reports_and_the_snapshot_validate(
    tmp_path: Path, six: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pinholes opened, then one closed: the plans, the reports and show's held pinholes validate."""
    path = write(tmp_path, PINHOLES)
    base = ["--router", six.url, "--format", "json"]
    opens = valid("plan", portctl(capsys, "plan", path, *base).out)
    assert [c["action"] for c in opens["pinholes"]] == ["open", "open"]
    opened = valid("apply", portctl(capsys, "apply", path, *base, "--auto-approve").out)
    assert [p["ok"] for p in opened["pinholes"]] == [True, True]
    held = valid("snapshot", portctl(capsys, "show", path, *base).out)
    assert sorted(p["name"] for p in held["pinholes"]) == ["game", "web"]
    only_web = write(tmp_path, PINHOLES.split("  - {name: game")[0], "web.yaml")
    closes = valid("plan", portctl(capsys, "plan", only_web, *base).out)
    assert [(c["action"], c["before"]["expires"]["epoch"] > time.time()) for c in closes["pinholes"]] == [
        ("close", True)
    ]
    closed = valid("apply", portctl(capsys, "apply", only_web, *base, "--auto-approve").out)
    assert [p["action"] for p in closed["pinholes"]] == ["close"]


def test_a_next_free_window_and_its_grant_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through PCP, next_free on a port another host holds: the plan's window and the report's granted
    key validate, and the grant is a key object like every other."""
    with EmulatorServer(Router(PROFILES["spec"]), pcp_port=0) as server:
        server.router.add(18080, "TCP", "192.168.1.77", 18080, "someone's web server")
        path = write(tmp_path, NEXT_FREE)
        base = ["--router", server.pcp_url(), "--format", "json"]
        planned = valid("plan", portctl(capsys, "plan", path, *base).out)
        assert [c["window"] for c in planned["changes"]] == [{"low": 18080, "high": 18180}]
        applied = portctl(capsys, "apply", path, *base, "--auto-approve")
        assert applied.code == 0, applied.err
        report = valid("apply", applied.out)
        assert [r["granted"] for r in report["results"]] == [{"external_port": 18081, "protocol": "TCP"}]


# -- the schemas reject what breaks the shared shape ------------------------------------------


def _plan_doc() -> dict[str, Any]:
    mapping = {**{"key": KEY}, "internal_client": "10.0.0.2", "internal_port": 80, "description": "x"}
    mapping |= {"lease": 3600, "enabled": True, "remote_host": ""}
    change = {"action": "add", "name": "web", "key": KEY, "before": None, "after": mapping, "reason": "declared"}
    change |= {"replace": False, "same_port_ok": False, "allowed": [], "protect": False, "adapted": [], "note": ""}
    change |= {"sensitive": "", "fields": [], "window": None, "drift": None}
    doc = {"format_version": 2, "kind": "plan", "owner": "o", "router": None, "changes": [change], "foreign": []}
    doc |= {"conflicts": [], "kept": [], "protected": [], "table": [], "desired": [mapping], "blocked": ""}
    doc |= {"refusals": [], "quirks": [], "pinholes": [], "pinholes_unavailable": "", "pinholes_through": ""}
    return doc | {"summary": {"add": 1, "change": 0, "remove": 0, "conflict": 0}}


def _apply_doc() -> dict[str, Any]:
    result = {"action": "add", "name": "web", "key": KEY, "ok": True, "skipped": False, "final": False}
    result |= {"error": "", "granted": None}
    doc = {"format_version": 2, "kind": "apply", "router": None, "ok": True, "unverified": "", "leases_end": None}
    return doc | {"results": [result], "pinholes": []}


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        at: Any = doc
        for p in parents:
            at = at[int(p)] if p.isdigit() else at[p]
        at[last] = value

    return edit


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(name) and None


@pytest.mark.parametrize(
    ("schema", "make", "edit"),
    [
        ("apply", _apply_doc, _set("results/0/key", "8080/tcp")),  # format_version 1's apply report
        ("apply", _apply_doc, _set("results/0/granted", "8081/tcp")),
        ("apply", _apply_doc, _set("format_version", "1")),
        ("apply", _apply_doc, _drop("kind")),
        ("apply", _apply_doc, _set("kind", "plan")),
        ("apply", _apply_doc, _set("leases_end", "2026-01-01T00:00:00Z")),  # a time is {time, epoch}
        ("apply", _apply_doc, _drop("leases_end")),
        ("plan", _plan_doc, _set("changes/0/key", {"external_port": 8080, "protocol": "tcp"})),
        ("plan", _plan_doc, _set("changes/0/after/surprise", 1)),
        ("plan", _plan_doc, _set("changes/0/action", "explode")),
        ("plan", _plan_doc, _set("changes/0/drift", "maybe")),
        ("plan", _plan_doc, _set("desired/0/lease", -1)),
        ("plan", _plan_doc, _set("snapshot", {"path": "s", "read_at": "2026-01-01T00:00:00Z"})),
        ("plan", _plan_doc, _drop("summary")),
    ],
)
def test_a_document_breaking_its_schema_is_rejected(
    schema: str, make: Callable[[], dict[str, Any]], edit: Callable[[dict[str, Any]], None]
) -> None:
    """The untouched document is valid; the edited one is not."""
    doc = make()
    assert docschemas.errors(schema, doc) == []
    broken = copy.deepcopy(doc)
    edit(broken)
    assert docschemas.errors(schema, broken) != []


# -- saved plans of the previous version, and documents that are not plans -------------------


def test_a_saved_plan_of_format_version_1_is_refused_with_what_to_do(
    drifted: tuple[str, str], tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan saved by the previous portctl ("format_version": "1") is one message saying to plan again;
    nothing is written."""
    _, url = drifted
    saved = tmp_path / "plan.json"
    portctl(capsys, "plan", write(tmp_path, V2, "v2-no-clash.yaml"), "--router", url, "--out", str(saved))
    doc = json.loads(saved.read_text())
    doc["format_version"] = "1"
    del doc["kind"]
    saved.write_text(json.dumps(doc))
    before = snapshot(emulator)
    run = portctl(capsys, "apply", str(saved), "--router", url)
    assert run.code == 1
    assert run.err.strip() == (
        f"error: {saved}: a portctl plan of format_version '1'; this portctl reads format_version 2: "
        f"make the plan again (portctl plan MANIFEST --out {saved}). Nothing was changed"
    )
    assert snapshot(emulator) == before


def test_a_snapshot_given_to_apply_is_refused_by_its_kind(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply SNAPSHOT.json says the file is a snapshot document, not a saved plan; nothing is written."""
    emulator.router.add(9999, "TCP", "192.168.1.77", 9999, "someone else's game server")
    snap = str(tmp_path / "snap.json")
    assert portctl(capsys, "show", "--router", emulator.url, "--snapshot-out", snap).code == 0
    before = snapshot(emulator)
    run = portctl(capsys, "apply", snap, "--router", emulator.url, "--auto-approve")
    assert run.code == 1
    assert "a portctl document of kind 'snapshot', not a saved plan (kind 'plan')" in run.err
    assert snapshot(emulator) == before


def test_a_saved_plan_that_closes_a_pinhole_is_applied(
    tmp_path: Path, six: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closing pinhole's expiry is a time with fractional epoch seconds: the saved plan carrying it is
    read back and applied, closing only that pinhole."""
    path = write(tmp_path, PINHOLES)
    assert portctl(capsys, "apply", path, "--router", six.url, "--auto-approve").code == 0
    kept = [p for p in six.router.firewall.rows() if p.internal_port == 18800]
    saved = str(tmp_path / "close.json")
    only_web = write(tmp_path, PINHOLES.split("  - {name: game")[0], "web.yaml")
    assert portctl(capsys, "plan", only_web, "--router", six.url, "--out", saved).code == 0
    run = portctl(capsys, "apply", saved, "--router", six.url)
    assert run.code == 0, run.err
    assert six.router.firewall.rows() == kept


def test_a_fraction_elsewhere_in_a_saved_plan_is_refused(
    drifted: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every number of a plan but a time's epoch is whole: a port of 8080.5 is one message."""
    _, url = drifted
    saved = tmp_path / "plan.json"
    portctl(capsys, "plan", write(tmp_path, V2, "v2-no-clash.yaml"), "--router", url, "--out", str(saved))
    saved.write_text(saved.read_text().replace('"external_port": 8443', '"external_port": 8443.5'))
    run = portctl(capsys, "apply", str(saved), "--router", url)
    assert run.code == 1
    assert "8443.5 is not a number a plan holds" in run.err
