"""What was approved is what gets written: a router's needs are planned (and shown), never applied silently."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from reconciler import quirks
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from tests.helpers import FOREIGN, portctl, snapshot, write

HEAD = "apiVersion: portctl/v1\nowner: approved\n"
WEB = "  - {name: web, external_port: 8080, internal_port: 80, internal_client: 127.0.0.1, lease: 1h}\n"
ADMIN = "  - {name: admin, external_port: 8443, internal_client: 127.0.0.1, remote_host: 198.51.100.7, lease: 1h%s}\n"
RESTRICTED = HEAD + "mappings:\n" + WEB + ADMIN % ""
OPENED = HEAD + "mappings:\n" + WEB + ADMIN % ", allow_any_remote_host: true"
SHORT = HEAD + "mappings:\n" + WEB.replace("lease: 1h", "lease: 1h%s")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    s = EmulatorServer(Router(PROFILES[request.param])).start()
    s.router.add(*FOREIGN)
    yield s
    s.stop()


def rows(server: EmulatorServer) -> dict[int, tuple[str, int, str]]:
    """Owned rows by external port: (internal client, lease asked, remote host)."""
    return {
        e.external_port: (e.internal_client, 0 if e.expires is None else 1, e.remote_host)
        for e in server.router.rows()
        if e.description.startswith("pc:")
    }


def run(capsys: pytest.CaptureFixture[str], server: EmulatorServer, *args: str) -> tuple[int, str]:
    r = portctl(capsys, *args, "--router", server.url, "--no-color")
    return r.code, r.out + r.err


def adds(server: EmulatorServer) -> int:
    return server.router.calls["AddPortMapping"]


def test_plan_shows_the_remote_host_of_every_row(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A text plan says which remote hosts may use each mapping."""
    code, out = run(capsys, emulator, "plan", write(tmp_path, RESTRICTED))
    assert code == 0, out
    assert "web" in out and "-> 127.0.0.1:80  lease 1h  from any remote host" in out
    assert "-> 127.0.0.1:8443  lease 1h  from 198.51.100.7" in out


@pytest.mark.parametrize("server", ["wildcard-remote-only"], indirect=True)
def test_remote_host_first_refused_mid_apply_then_refused_up_front(
    tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer
) -> None:
    """Without the opt-in, a 726 refuses only that mapping (nothing broader is written), and the next
    plan refuses it before any write, naming the mapping, the need, the opt-in and forget."""
    path = write(tmp_path, RESTRICTED)
    code, out = run(capsys, server, "apply", path, "--auto-approve")
    assert code == 1, out
    failed = next(line for line in out.splitlines() if "FAILED" in line)
    assert "admin 8443/tcp" in failed and "726" in failed
    assert "allow_any_remote_host: true" in failed and "Nothing broader was written" in failed
    assert rows(server) == {8080: ("127.0.0.1", 1, "")}  # the sibling was applied; no open 8443
    assert "Run apply again to finish" not in out  # a rerun would be refused the same way
    assert snapshot(server)[0] == FOREIGN
    before = adds(server)
    code, out = run(capsys, server, "apply", path, "--auto-approve")
    assert code == 1
    conflict = next(line for line in out.splitlines() if line.strip().startswith("! admin"))
    assert "cannot restrict a mapping to one remote host" in conflict and "allow_any_remote_host" in conflict
    assert "portctl forget wildcard-remote-only" in conflict
    assert adds(server) == before  # refused before any write
    assert snapshot(server)[0] == FOREIGN


@pytest.mark.parametrize("server", ["wildcard-remote-only"], indirect=True)
def test_remote_host_opened_only_with_the_opt_in_and_shown(
    tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer
) -> None:
    """With allow_any_remote_host, the plan shows the widened row and apply writes exactly that."""
    assert run(capsys, server, "apply", write(tmp_path, RESTRICTED), "--auto-approve")[0] == 1  # learns 726
    path = write(tmp_path, OPENED)
    code, out = run(capsys, server, "plan", path)
    assert code == 0, out
    assert "-> 127.0.0.1:8443  lease 1h  from any remote host" in out
    assert "adapted: remote_host 198.51.100.7 -> any remote host" in out
    assert "[wildcard-remote-only]; allowed by allow_any_remote_host" in out
    code, out = run(capsys, server, "apply", path, "--auto-approve")
    assert code == 0, out
    assert rows(server)[8443] == ("127.0.0.1", 1, "")
    assert run(capsys, server, "plan", path, "--detailed-exitcode")[0] == 0


@pytest.mark.parametrize("server", ["permanent-only"], indirect=True)
def test_finite_lease_never_silently_permanent(
    tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer
) -> None:
    """On a router that takes only permanent leases, a 1h lease is refused (725) and never written
    permanent without allow_permanent; with it, the plan shows the permanent row."""
    code, out = run(capsys, server, "apply", write(tmp_path, SHORT % ""), "--auto-approve")
    assert code == 1, out
    assert "725" in out and "allow_permanent: true" in out
    assert rows(server) == {}
    code, out = run(capsys, server, "plan", write(tmp_path, SHORT % ""))
    assert code == 1 and "! web" in out and "portctl forget permanent-only" in out
    path = write(tmp_path, SHORT % ", allow_permanent: true")
    code, out = run(capsys, server, "plan", path)
    assert code == 0, out
    assert "-> 127.0.0.1:80  lease permanent  from any remote host" in out
    assert "adapted: lease 1h -> permanent" in out and "allowed by allow_permanent" in out
    assert run(capsys, server, "apply", path, "--auto-approve")[0] == 0
    assert rows(server) == {8080: ("127.0.0.1", 0, "")}


@pytest.mark.parametrize("server", ["permanent-only"], indirect=True)
def test_policy_max_lease_is_judged_on_the_row_as_written(
    tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer
) -> None:
    """policy.max_lease 1d refuses a 1h lease the router would hold permanently, even with allow_permanent."""
    text = (SHORT % ", allow_permanent: true").replace("mappings:\n", "policy: {max_lease: 1d}\nmappings:\n")
    path = write(tmp_path, text)
    assert run(capsys, server, "apply", path, "--auto-approve")[0] == 1  # 725 first shows here
    before = adds(server)
    code, out = run(capsys, server, "apply", path, "--auto-approve")
    assert code == 1
    assert "web 8080/tcp would be written with a permanent lease" in out and "policy.max_lease (1d)" in out
    assert adds(server) == before and rows(server) == {}
    assert snapshot(server) == [FOREIGN]


def learned(server: EmulatorServer) -> quirks.Learned:
    return Cache.from_env().learned(server.udn)


@pytest.mark.parametrize("server", ["wildcard-remote-only"], indirect=True)
def test_forget_drops_a_lesson_so_the_router_is_asked_again(
    tmp_path: str, capsys: pytest.CaptureFixture[str], server: EmulatorServer
) -> None:
    """`portctl forget NEED` (the command the blocking message names) clears what was learned."""
    path = write(tmp_path, RESTRICTED)
    assert run(capsys, server, "apply", path, "--auto-approve")[0] == 1
    assert quirks.Quirk.WILDCARD_REMOTE_ONLY in learned(server)
    code, out = run(capsys, server, "forget", "no-such-need")
    assert code == 1 and "no such need: no-such-need" in out
    code, out = run(capsys, server, "forget", "wildcard-remote-only")
    assert code == 0, out
    assert "Forgot what" in out and "wildcard-remote-only" in out
    assert quirks.Quirk.WILDCARD_REMOTE_ONLY not in learned(server)
    code, out = run(capsys, server, "plan", path)
    assert code == 0, out  # planned as declared again: the router will be asked
    assert "from 198.51.100.7" in out and "! admin" not in out


def test_a_suspicion_never_blocks_a_mapping(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A need only suspected (an old cache entry, a 402) is named, and the mapping is planned as declared."""
    now = time.time()
    suspicion = quirks.Lesson("AddPortMapping answered 726 (an old cache entry)", False, now)
    Cache.from_env().remember(emulator.udn, quirks.Learned({quirks.Quirk.WILDCARD_REMOTE_ONLY: suspicion}))
    path = write(tmp_path, RESTRICTED)
    code, out = run(capsys, emulator, "plan", path)
    assert code == 0, out
    assert "-> 127.0.0.1:8443  lease 1h  from 198.51.100.7" in out
    assert "cannot restrict a mapping to one remote host [wildcard-remote-only] (suspected" in out
    assert run(capsys, emulator, "apply", path, "--auto-approve")[0] == 0
    assert {e.external_port: e.remote_host for e in emulator.router.rows()}[8443] == "198.51.100.7"


DAY = 86400.0


@pytest.mark.parametrize(
    ("proven", "age", "kept"),
    [(True, 29 * DAY, True), (True, 31 * DAY, False), (False, 0.9 * DAY, True), (False, 1.1 * DAY, False)],
)
def test_lessons_age(proven: bool, age: float, kept: bool) -> None:
    """A proven lesson is trusted for about 30 days, a suspicion for about a day; then the router is asked again."""
    seen = 1_700_000_000.0
    doc = quirks.Learned({quirks.Quirk.PERMANENT_ONLY: quirks.Lesson("725", proven, seen)}).to_json()
    loaded = quirks.Learned.from_json(doc, now=seen + age)
    assert (quirks.Quirk.PERMANENT_ONLY in loaded) is kept


def test_an_old_cache_entry_loads_as_a_suspicion_seen_when_written() -> None:
    """Evidence without proof or age (written before lessons had them) is a suspicion as old as the entry."""
    doc = {"quirks": {"secure-mode": "AddPortMapping answered 606"}, "updated": 1_700_000_000.0}
    lesson = quirks.Learned.from_json(doc, now=1_700_000_000.0 + 3600).quirks[quirks.Quirk.SECURE_MODE]
    assert lesson == quirks.Lesson("AddPortMapping answered 606", False, 1_700_000_000.0)
    assert quirks.Learned.from_json(doc, now=1_700_000_000.0 + 2 * DAY).quirks == {}


def test_admission_judges_the_port_next_free_moved_to() -> None:
    """A port next_free moves onto (3389, RDP) is refused as sensitive by the one gate, typed."""
    from reconciler import admission, diff
    from reconciler.models import DesiredMapping, Manifest, MappingKey, OnConflict, PortMapping, Protocol

    want = DesiredMapping(
        "rdp", MappingKey(3388, Protocol.TCP), "192.168.1.2", 3388, 3600, on_conflict=OnConflict.NEXT_FREE
    )
    manifest = Manifest("m.yaml", "approved", (want,))
    foreign = PortMapping(MappingKey(3388, Protocol.TCP), "192.168.1.9", 3388, "someone else")
    plan = diff.diff(manifest, [foreign])
    assert [c.key.external_port for c in plan.changes] == [3389]
    refusals = admission.admit(plan, manifest)
    assert [(r.kind, r.name) for r in refusals] == [("sensitive", "rdp")]
    assert "RDP (port 3389)" in refusals[0].message


def test_plan_json_carries_the_refusals(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """plan --json lists each refusal of the admission gate with its kind and mapping."""
    lesson = quirks.Lesson("AddPortMapping answered 725", True, time.time())
    Cache.from_env().remember(emulator.udn, quirks.Learned({quirks.Quirk.PERMANENT_ONLY: lesson}))
    text = (SHORT % ", allow_permanent: true").replace("mappings:\n", "policy: {max_lease: 1d}\nmappings:\n")
    r = portctl(capsys, "plan", write(tmp_path, text), "--router", emulator.url, "--json")
    assert r.code == 1
    doc = json.loads(r.out)
    assert [(x["kind"], x["name"], x["key"]) for x in doc["refusals"]] == [
        ("policy", "web", {"external_port": 8080, "protocol": "TCP"})
    ]
    assert (
        doc["changes"][0]["after"]["lease"] == 0 and doc["changes"][0]["adapted"][0]["allowed_by"] == "allow_permanent"
    )
