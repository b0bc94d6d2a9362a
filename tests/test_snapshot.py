"""Router snapshots: the document show prints, its schema, plan --snapshot without the router, its age."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler import ownership, plancodec, planfile, snapshot
from reconciler.backends.base import Capabilities
from reconciler.cli import _parser
from reconciler.emulator import EmulatorServer
from reconciler.models import MappingKey, PortMapping, Protocol
from reconciler.quirks import Learned
from tests import docschemas
from tests.helpers import FOREIGN, MANIFEST, portctl, write
from tests.helpers import snapshot as table_of

AUTO_MANIFEST = """\
apiVersion: portctl/v1
owner: test
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    internal_client: auto
    description: nginx
"""


def take(capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, tmp_path: Path, *more: str) -> str:
    """A snapshot of the emulator written by show --snapshot-out; its path."""
    path = str(tmp_path / "snap.json")
    run = portctl(capsys, "show", *more, "--router", emulator.url, "--snapshot-out", path)
    assert run.code == 0, run.err
    return path


def edit(path: str, **changes: Any) -> None:
    doc = json.loads(Path(path).read_text())
    doc.update(changes)
    Path(path).write_text(json.dumps(doc))


def age_by(path: str, seconds: float) -> None:
    """Make the snapshot in `path` as if read `seconds` earlier."""
    doc = json.loads(Path(path).read_text())
    at = doc["read_at"]["epoch"] - seconds
    edit(path, read_at={"time": snapshot.iso(at), "epoch": at})


def changes(doc: dict[str, Any]) -> list[tuple[str, str, object]]:
    return [(c["action"], c["name"], c["after"] and c["after"]["internal_client"]) for c in doc["changes"]]


# -- the document --------------------------------------------------------------------------


def test_show_json_is_a_snapshot_the_schema_accepts(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """show --format json prints a versioned snapshot that validates against schemas/snapshot.schema.json."""
    emulator.router.add(*FOREIGN)
    path = write(tmp_path, MANIFEST)
    assert portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve").code == 0
    run = portctl(capsys, "show", path, "--router", emulator.url, "--format", "json")
    assert run.code == 0
    doc = json.loads(run.out)
    assert docschemas.errors("snapshot", doc) == []
    assert doc["snapshot"] == {"format": "portctl-snapshot", "version": 1}
    assert doc["auto"]["internal_client"] == "127.0.0.1"
    assert doc["router"]["udn"] == emulator.udn
    assert len(doc["mappings"]) == len(emulator.router.rows()) == 6
    assert {m["owner"] for m in doc["mappings"]} == {"owned", "foreign"}


def test_snapshot_out_writes_what_json_prints(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """show --snapshot-out FILE writes the document show --format json prints (read a moment apart)."""
    emulator.router.add(*FOREIGN)
    path = take(capsys, emulator, tmp_path)
    printed = json.loads(portctl(capsys, "show", "--router", emulator.url, "--format", "json").out)
    written = json.loads(Path(path).read_text())
    for doc in (printed, written):
        del doc["read_at"], doc["boot"]
    assert written == printed
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".snapshot-")]  # no temporary file left


def test_decode_reads_back_what_document_writes() -> None:
    """A snapshot encoded and decoded is the same snapshot."""
    snap = snapshot.decode(
        {
            **snapshot.header(1_700_000_000.5, _capabilities(), "192.168.77.2", "2001:db8:77::2"),
            "format_version": 2,
            "router": {
                "protocol": "upnp-igd2",
                "location": "http://192.168.77.1:5000/rootDesc.xml",
                "udn": "uuid:x",
                "friendly_name": "r",
                "igd_version": 2,
                "service_type": "urn:schemas-upnp-org:service:WANIPConnection:2",
                "external_ip": "11.22.33.1",
            },
            "boot": {"boot_id": 7},
            "learned": {"quirks": {"permanent-only": {"evidence": "725", "proven": True, "seen": 1_699_999_000.0}}},
            "mappings": [_row(8080)],
        }
    )
    backend = snapshot.SnapshotBackend(snap, "s.json")
    doc = snapshot.document(
        backend, snap.table, read_at=snap.read_at, boot={"boot_id": 7}, pinhole_source=snap.pinhole_source
    )
    again = snapshot.decode(doc)
    assert again == snap
    assert again.auto == "192.168.77.2" and again.pinhole_source == "2001:db8:77::2" and again.boot_id == 7
    assert [q.value for q in again.learned.quirks] == ["permanent-only"]


def test_a_snapshot_backend_never_writes() -> None:
    """SnapshotBackend answers reads from the snapshot and refuses every write."""
    snap = snapshot.Snapshot(plancodec.read_router(_router_doc(), "router"), _capabilities(), Learned(), 1.0, (), None)
    backend = snapshot.SnapshotBackend(snap, "s.json")
    row = PortMapping(MappingKey(80, Protocol.TCP), "192.168.77.2", 80, "x")
    with pytest.raises(snapshot.SnapshotWrite):
        backend.add_mapping(row)
    with pytest.raises(snapshot.SnapshotWrite):
        backend.delete_mapping(row)
    assert backend.local_or_unknown() is None and backend.list_mappings() == []


# -- malformed snapshots ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"snapshot": {"format": "portctl-snapshot", "version": 2}}, "snapshot.version: version 2"),
        ({"snapshot": {"format": "terraform-state", "version": 1}}, "snapshot.format"),
        ({"read_at": {"time": "yesterday", "epoch": 1.0}}, "read_at.time"),
        ({"read_at": {"time": "2026-01-01T00:00:00Z", "epoch": 1.0}}, "disagree"),
        ({"auto": {"internal_client": "router.lan", "pinhole_source": None}}, "auto.internal_client"),
        ({"capabilities": {"can_list": True}}, "capabilities.can_describe: missing"),
        ({"mappings": [{"key": {"external_port": 70000, "protocol": "TCP"}}]}, "mappings[0].key.external_port"),
        ({"learned": []}, "learned"),
    ],
)
def test_a_malformed_snapshot_is_one_message(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], change: dict[str, Any], said: str
) -> None:
    """A snapshot of another version or with a bad field: one error naming the file and the field, exit 1."""
    path = take(capsys, emulator, tmp_path)
    edit(path, **change)
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", path)
    assert run.code == 1
    assert run.err.startswith(f"error: {path}: ") and said in run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err


def _lesson(**fields: Any) -> dict[str, Any]:
    lesson = {"evidence": "725 OnlyPermanentLeasesSupported", "proven": True, "seen": 1_700_000_000.0, **fields}
    return {"quirks": {"permanent-only": lesson}, "description_limit": None, "list_cap": None}


@pytest.mark.parametrize(
    ("learned", "said"),
    [
        (_lesson(evidence="725\n::error::forged annotation"), "learned.quirks.permanent-only.evidence: holds control"),
        (_lesson(evidence="725\n::stop-commands::tok"), "learned.quirks.permanent-only.evidence: holds control"),
        (_lesson(evidence="725 \x1b[2Jcleared"), "learned.quirks.permanent-only.evidence: holds control"),
        (_lesson(evidence="x" * 201), "learned.quirks.permanent-only.evidence: longer than 200"),
        (_lesson(evidence=725), "learned.quirks.permanent-only.evidence: expected text"),
        (_lesson(seen=float("nan")), "learned.quirks.permanent-only.seen: expected a number"),
        (_lesson(seen=float("inf")), "learned.quirks.permanent-only.seen: expected a number"),
        (_lesson(seen=-1), "learned.quirks.permanent-only.seen: expected a number"),
        (_lesson(proven="yes"), "learned.quirks.permanent-only.proven: expected true or false"),
        ({**_lesson(), "updated": float("-inf")}, "learned.updated: expected a number"),
        ({**_lesson(), "updated": float("nan")}, "learned.updated: expected a number"),
        ({**_lesson(), "list_cap": "128"}, "learned.list_cap: expected a whole number"),
        ({**_lesson(), "description_limit": 256}, "learned.description_limit: expected a whole number"),
        ({"quirks": {"permanent-only": "725"}}, "learned.quirks.permanent-only: expected an object"),
        ({"quirks": {"a\nb": {"evidence": "", "proven": False, "seen": 0}}}, "learned.quirks: a need's name"),
    ],
)
def test_a_hostile_learned_block_is_one_message(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], learned: Any, said: str
) -> None:
    """A lesson with control characters, unbounded text or a non-finite time is refused naming the file and
    field: nothing of it reaches the plan's output (a workflow command) or a saved plan."""
    path = take(capsys, emulator, tmp_path)
    edit(path, learned=learned)
    out, manifest = tmp_path / "plan.json", write(tmp_path, MANIFEST)
    for form in ("text", "github"):
        run = portctl(capsys, "plan", manifest, "--snapshot", path, "--format", form, "--out", str(out))
        assert run.code == 1 and run.out == "" and not out.exists()
        assert run.err.startswith(f"error: {path}: ") and said in run.err
        assert run.err.count("\n") == 1 and "Traceback" not in run.err


def test_a_snapshots_lessons_reach_the_plan_and_its_saved_form(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A well-formed suspicion is planned with (the plan quotes it) and the plan saved from it loads back."""
    path = take(capsys, emulator, tmp_path)
    now = json.loads(Path(path).read_text())["read_at"]["epoch"]
    edit(path, learned=_lesson(seen=now - 60, proven=False))  # a suspicion: the plan quotes its evidence
    out = tmp_path / "plan.json"
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", path, "--out", str(out))
    assert run.code == 0, run.err
    assert "725 OnlyPermanentLeasesSupported" in run.out
    assert any("725 OnlyPermanentLeasesSupported" in q for q in planfile.load(str(out)).plan.quirks)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000])
def test_a_file_that_is_no_snapshot_is_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """Not JSON, not UTF-8, not an object or nested past reason: one error naming the file."""
    path = tmp_path / "snap.json"
    path.write_bytes(content)
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", str(path))
    assert run.code == 1 and run.err.startswith(f"error: {path}: ") and run.err.count("\n") == 1


def test_a_snapshot_too_large_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file above the size bound is refused before it is parsed."""
    monkeypatch.setattr(snapshot, "MAX_BYTES", 1000)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"mappings": ["x" * 2000]}))
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", str(path))
    assert run.code == 1 and "larger than 1000 bytes" in run.err


def test_a_missing_snapshot_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot path that does not exist: named, exit 1."""
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", str(tmp_path / "nope.json"))
    assert run.code == 1 and "cannot read the snapshot" in run.err and "nope.json" in run.err


# -- ages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("90m", 5400), ("1d12h", 129600), ("3600", 3600)])
def test_max_snapshot_age_reads_durations(text: str, seconds: int) -> None:
    """--max-snapshot-age takes the durations leases take."""
    args = _parser("plan").parse_args(["plan", "m.yaml", "--snapshot", "s.json", "--max-snapshot-age", text])
    assert args.max_snapshot_age == seconds


@pytest.mark.parametrize("text", ["24 hours", "-1h", "1y", ""])
def test_max_snapshot_age_refuses_what_is_no_duration(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad age is a usage error (exit 2) naming the flag and what a duration looks like."""
    with pytest.raises(SystemExit) as exited:
        _parser("plan").parse_args(["plan", "m.yaml", "--snapshot", "s.json", "--max-snapshot-age", text])
    assert exited.value.code == 2
    assert "argument --max-snapshot-age: " in capsys.readouterr().err


def test_a_snapshot_past_its_age_is_refused(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot read 2 days ago plans with its age named, and is refused past --max-snapshot-age 24h."""
    path = take(capsys, emulator, tmp_path)
    age_by(path, 2 * 86400 + 60)
    manifest = write(tmp_path, MANIFEST)
    run = portctl(capsys, "plan", manifest, "--snapshot", path)
    assert run.code == 0 and f"Router table from snapshot {path} at " in run.out and ", 2d1m ago." in run.out
    run = portctl(capsys, "plan", manifest, "--snapshot", path, "--max-snapshot-age", "24h")
    assert run.code == 1 and run.out == ""
    assert "read 2d1m ago" in run.err and "older than --max-snapshot-age 1d" in run.err
    assert portctl(capsys, "plan", manifest, "--snapshot", path, "--max-snapshot-age", "3d").code == 0


@pytest.mark.parametrize("read_at", ["9999-01-01T00:00:00Z", "2100-01-01T00:00:00Z"])
@pytest.mark.parametrize("max_age", [[], ["--max-snapshot-age", "1h"]])
def test_a_snapshot_from_the_future_is_refused(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], read_at: str, max_age: list[str]
) -> None:
    """A snapshot read after this host's clock plans nothing, with or without a maximum age: one error naming it."""
    path = take(capsys, emulator, tmp_path)
    epoch = _epoch(read_at)
    edit(path, read_at={"time": read_at, "epoch": epoch})
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", path, *max_age)
    assert run.code == 1 and run.out == ""
    assert run.err.startswith(f"error: {path}: the snapshot says it was read at {read_at}, ")
    assert "after this host's clock" in run.err and "Nothing was planned" in run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err


@pytest.mark.parametrize(("ahead", "refused"), [(0, False), (60, False), (300, False), (301, True), (86400, True)])
def test_a_snapshot_ahead_of_the_clock_is_refused_past_five_minutes(ahead: float, refused: bool) -> None:
    """Clocks a few minutes apart are tolerated (age 0); a snapshot more than 5 minutes ahead is refused."""
    now = 1_800_000_000.0
    snap = snapshot.Snapshot(
        plancodec.read_router(_router_doc(), "router"), _capabilities(), Learned(), now + ahead, (), None
    )
    if refused:
        with pytest.raises(snapshot.SnapshotError, match="after this host's clock"):
            snapshot.check_age("s.json", snap, None, now)
    else:
        snapshot.check_age("s.json", snap, 3600, now)
        assert snapshot.age(snap, now) == 0


def test_max_snapshot_age_needs_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--max-snapshot-age without --snapshot is refused rather than ignored."""
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--max-snapshot-age", "1h")
    assert run.code == 1 and "--snapshot" in run.err


# -- planning from it ------------------------------------------------------------------------


def test_a_snapshot_plan_is_the_live_plan_without_the_router(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan --snapshot, with the router gone, plans the same changes as a live plan did."""
    emulator.router.add(*FOREIGN)
    first = write(tmp_path, MANIFEST)
    assert portctl(capsys, "apply", first, "--router", emulator.url, "--auto-approve").code == 0
    # A changed manifest: one mapping changes, four rows go away, one is new.
    changed = MANIFEST.split("  - name: game")[0].replace("internal_port: 80", "internal_port: 81")
    changed += "  - name: dns\n    external_port: 5353\n    protocol: udp\n    internal_client: 127.0.0.1\n"
    manifest = write(tmp_path, changed, "changed.yaml")
    live = json.loads(portctl(capsys, "plan", manifest, "--router", emulator.url, "--format", "json").out)
    path = take(capsys, emulator, tmp_path, manifest)
    emulator.stop()
    run = portctl(capsys, "plan", manifest, "--snapshot", path, "--format", "json")
    assert run.code == 0, run.err
    offline = json.loads(run.out)
    assert changes(offline) == changes(live) and len(offline["changes"]) == 6
    assert offline["foreign"] == live["foreign"] and offline["router"] == live["router"]
    assert offline["snapshot"]["path"] == path and offline["snapshot"]["age_seconds"] >= 0
    markdown = portctl(capsys, "plan", manifest, "--snapshot", path, "--format", "markdown").out
    assert f"from snapshot {path} at " in markdown


def test_auto_is_the_address_the_snapshot_recorded(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`internal_client: auto` planned from a snapshot is the snapshot host's address: its mapping is no change."""
    key = MappingKey(8080, Protocol.TCP)
    emulator.router.add(8080, "TCP", "10.9.8.7", 80, ownership.describe("test", key, "web", "nginx"))
    manifest = write(tmp_path, AUTO_MANIFEST)
    path = take(capsys, emulator, tmp_path)
    live = portctl(capsys, "plan", manifest, "--snapshot", path)  # recorded here: 127.0.0.1, a change
    assert "internal_client auto = 127.0.0.1 (from the snapshot)" in live.out and "1 to change" in live.out
    edit(path, auto={"internal_client": "10.9.8.7", "pinhole_source": None})
    run = portctl(capsys, "plan", manifest, "--snapshot", path, "--detailed-exitcode")
    assert run.code == 0, run.out + run.err
    assert "internal_client auto = 10.9.8.7 (from the snapshot)" in run.out
    assert portctl(capsys, "validate", manifest, "--snapshot", path).out.splitlines()[1] == (
        "internal_client auto = 10.9.8.7 (from the snapshot)"
    )


def test_apply_refuses_a_snapshot(tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    """apply --snapshot is refused with a reason, and the router is as it was."""
    emulator.router.add(*FOREIGN)
    path = take(capsys, emulator, tmp_path)
    before = table_of(emulator)
    run = portctl(capsys, "apply", write(tmp_path, MANIFEST), "--snapshot", path, "--router", emulator.url)
    assert run.code == 1 and "apply never writes from a snapshot" in run.err
    assert table_of(emulator) == before


def test_a_snapshot_of_a_router_that_cannot_describe_is_refused(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without descriptions the owners live on the reading host: a plan from the snapshot is refused."""
    path = take(capsys, emulator, tmp_path)
    doc = json.loads(Path(path).read_text())
    edit(path, capabilities={**doc["capabilities"], "can_describe": False})
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--snapshot", path)
    assert run.code == 1 and "cannot list or describe" in run.err


# -- which router ----------------------------------------------------------------------------


def _naming(url: str) -> str:
    return MANIFEST.replace("mappings:", f"router:\n  url: '{url}'\nmappings:", 1)


@pytest.mark.parametrize("url", ["http://192.168.77.1:5000/rootDesc.xml", "pcp://192.168.77.1", "{emulator}x"])
def test_a_snapshot_of_another_router_than_the_manifest_names_is_refused(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A manifest whose router.url is not where the snapshot's router was read plans nothing: one error naming both."""
    path = take(capsys, emulator, tmp_path)
    url = url.format(emulator=emulator.url)
    manifest = write(tmp_path, _naming(url))
    for form in ("text", "json"):
        run = portctl(capsys, "plan", manifest, "--snapshot", path, "--format", form)
        assert run.code == 1 and run.out == ""
        assert run.err.startswith(f"error: {path}: the snapshot is of the router at {emulator.url} (")
        assert f"but {manifest} names router.url {url}" in run.err and "Nothing was planned" in run.err
        assert run.err.count("\n") == 1 and "Traceback" not in run.err


def test_a_snapshot_of_the_router_the_manifest_names_plans(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """router.url naming the router the snapshot was read from plans against it."""
    path = take(capsys, emulator, tmp_path)
    run = portctl(capsys, "plan", write(tmp_path, _naming(emulator.url)), "--snapshot", path)
    assert run.code == 0, run.err
    assert f"at {emulator.url}, external IP " in run.out and "5 to add" in run.out


def test_a_plan_from_a_snapshot_names_its_router_when_the_manifest_does_not(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no router.url, the plan from a snapshot says which router it is of, in text, markdown and JSON."""
    path = take(capsys, emulator, tmp_path)
    manifest = write(tmp_path, MANIFEST)
    text = portctl(capsys, "plan", manifest, "--snapshot", path).out
    assert f"at {emulator.url}, external IP " in text
    markdown = portctl(capsys, "plan", manifest, "--snapshot", path, "--format", "markdown").out
    assert f"{emulator.url.removeprefix('http://')}, external IP " in markdown  # the scheme is kept from linking
    doc = json.loads(portctl(capsys, "plan", manifest, "--snapshot", path, "--format", "json").out)
    assert (doc["router"]["location"], doc["router"]["udn"]) == (emulator.url, emulator.udn)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://192.168.1.1:5000/rootDesc.xml", "HTTP://192.168.1.1:5000/rootDesc.xml", True),
        ("http://Router.LAN/rootDesc.xml", "http://router.lan:80/rootDesc.xml", True),
        ("http://[fe80::1%25eth0]:5000/d.xml", "http://[FE80:0::1]:5000/d.xml", True),
        ("pcp://192.168.1.1", "pcp://192.168.1.1:5351", True),
        ("http://192.168.1.1:5000/rootDesc.xml", "http://192.168.1.1:5001/rootDesc.xml", False),
        ("http://192.168.1.1:5000/rootDesc.xml", "http://192.168.1.2:5000/rootDesc.xml", False),
        ("http://192.168.1.1:5000/rootDesc.xml", "http://192.168.1.1:5000/other.xml", False),
        ("pcp://192.168.1.1", "natpmp://192.168.1.1", False),
    ],
)
def test_same_place_reads_router_urls(a: str, b: str, same: bool) -> None:
    """Router URLs are one place whatever the case, the IP's spelling, a default port or a zone; not across hosts,
    ports, paths or protocols."""
    assert snapshot.same_place(a, b) is same


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _capabilities() -> Capabilities:
    return Capabilities(True, True, False, True, 604800)


def _router_doc() -> dict[str, Any]:
    return {
        "protocol": "upnp-igd2",
        "location": "http://192.168.77.1:5000/rootDesc.xml",
        "udn": "uuid:x",
        "friendly_name": "r",
        "igd_version": 2,
        "service_type": "urn:schemas-upnp-org:service:WANIPConnection:2",
        "external_ip": "11.22.33.1",
    }


def _row(port: int) -> dict[str, Any]:
    return {
        "key": {"external_port": port, "protocol": "TCP"},
        "internal_client": "192.168.77.2",
        "internal_port": port,
        "description": "x",
        "lease": 0,
        "enabled": True,
        "remote_host": "",
    }
