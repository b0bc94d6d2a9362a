"""The agent following several manifests (a directory, or a list): one owner each, one pass under one
lock converges them all, one failing leaves the others converged, and the status has a section each.

The loop is turned by the test on a virtual clock the emulated router shares (`Driven`)."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from reconciler.agent.config import AgentConfig, ConfigError, build
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.emulator import EmulatorServer
from reconciler.models import MappingKey, Protocol
from reconciler.ownership import is_owned
from tests.agenthelp import AgentRun, Clock, Driven, GitRepo, manifest
from tests.helpers import snapshot

OK = ("True", "ReconciliationSucceeded")
XBOX = (3074, "UDP", "127.0.0.9", 3074, "Xbox Live")


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def owner_of(server: EmulatorServer, port: int) -> str:
    """The owner whose tag the row at `port`/tcp carries ("" for none of these)."""
    row = next(e for e in server.router.rows() if e.external_port == port)
    key = MappingKey(port, Protocol("TCP"))
    return next((o for o in ("web", "games", "homelab") if is_owned(o, key, row.description)), "")


def foreign(server: EmulatorServer) -> list[tuple[object, ...]]:
    return [r for r in snapshot(server) if r[0] == XBOX[0]]


@pytest.fixture
def apps(tmp_path: Any) -> str:
    """A directory of two manifests, one owner each, and a file that is not a manifest."""
    d = tmp_path / "apps"
    d.mkdir()
    write(str(d / "a-web.yaml"), manifest(("web", 8080, 80), ("api", 8443, 443), owner="web"))
    write(str(d / "b-games.yml"), manifest(("minecraft", 25565, 25565), owner="games"))
    write(str(d / "README.md"), "not a manifest\n")
    return str(d)


def driven(path: str, router: EmulatorServer, **kw: Any) -> Driven:
    return Driven(path, router, settle=0, interval=60, watch=30, **kw)


def sections(run: Driven) -> dict[str, dict[str, Any]]:
    return {os.path.basename(s["file"]): s for s in run.agent.status.to_json()["manifests"]}


def test_two_manifests_in_a_directory_converge_in_one_pass_each_tagged_by_its_owner(
    apps: str, emulator: EmulatorServer
) -> None:
    """One pass converges both manifests of a directory; each row carries its manifest's owner; a foreign row stays."""
    emulator.router.add(*XBOX)
    before = foreign(emulator)
    run = driven(apps, emulator)
    outcome = run.agent.reconcile()
    assert outcome.result == "changed"
    assert run.condition("Ready") == OK
    assert {p: owner_of(emulator, p) for p in (8080, 8443, 25565)} == {8080: "web", 8443: "web", 25565: "games"}
    assert foreign(emulator) == before
    got = sections(run)
    assert sorted(got) == ["a-web.yaml", "b-games.yml"]
    assert got["a-web.yaml"]["owner"] == "web"
    assert got["b-games.yml"]["owner"] == "games"
    assert [c["status"] for c in got["b-games.yml"]["conditions"]] == ["True"]
    assert {e["mapping"] for e in got["a-web.yaml"]["inventory"]} == {"8080/tcp", "8443/tcp"}
    assert {e["mapping"] for e in run.agent.status.to_json()["inventory"]} == {"8080/tcp", "8443/tcp", "25565/tcp"}
    # Both edited at once: the next pass takes both.
    write(
        os.path.join(apps, "a-web.yaml"), manifest(("web", 8080, 80), ("api", 8443, 443), ("ws", 8081, 81), owner="web")
    )
    write(
        os.path.join(apps, "b-games.yml"), manifest(("minecraft", 25565, 25565), ("quake", 27960, 27960), owner="games")
    )
    assert run.agent.reconcile().result == "changed"
    assert (owner_of(emulator, 8081), owner_of(emulator, 27960)) == ("web", "games")
    assert run.agent.reconcile().result == "unchanged"
    assert foreign(emulator) == before


def test_a_mapping_removed_from_one_manifest_prunes_only_that_owners_row(apps: str, emulator: EmulatorServer) -> None:
    """Dropping a mapping from one manifest removes that owner's row; the other owner's rows stay byte-identical."""
    emulator.router.add(*XBOX)
    run = driven(apps, emulator)
    run.agent.reconcile()
    others = [r for r in snapshot(emulator) if r[0] in (25565, 3074)]
    write(os.path.join(apps, "a-web.yaml"), manifest(("web", 8080, 80), owner="web"))
    assert run.agent.reconcile().result == "changed"
    assert {r[0] for r in snapshot(emulator)} == {8080, 25565, 3074}
    assert [r for r in snapshot(emulator) if r[0] in (25565, 3074)] == others
    assert run.condition("Ready") == OK


def test_a_broken_manifest_leaves_the_others_converged_and_is_named(apps: str, emulator: EmulatorServer) -> None:
    """An invalid second manifest does not stop the first: it is applied, and Ready says which file failed and why."""
    write(
        os.path.join(apps, "b-games.yml"),
        manifest(("minecraft", 25565, 25565), owner="games").replace("25565", "99999", 1),
    )
    run = driven(apps, emulator)
    outcome = run.agent.reconcile()
    assert {r[0] for r in snapshot(emulator)} == {8080, 8443}
    assert run.condition("Ready") == ("False", "ValidationFailed")
    assert outcome.message.startswith(os.path.join(apps, "b-games.yml") + ": ")
    assert "99999" in outcome.message
    got = sections(run)
    assert (got["a-web.yaml"]["reason"], got["a-web.yaml"]["conditions"][0]["status"]) == (
        "ReconciliationSucceeded",
        "True",
    )
    assert (got["b-games.yml"]["reason"], got["b-games.yml"]["conditions"][0]["status"]) == (
        "ValidationFailed",
        "False",
    )
    assert run.metric(f'portctl_manifest_ready{{manifest="{os.path.join(apps, "a-web.yaml")}"}}') == 1
    assert run.metric(f'portctl_manifest_ready{{manifest="{os.path.join(apps, "b-games.yml")}"}}') == 0
    # Fixed: the next pass applies it and Ready turns True.
    write(os.path.join(apps, "b-games.yml"), manifest(("minecraft", 25565, 25565), owner="games"))
    run.agent.reconcile()
    assert run.condition("Ready") == OK
    assert owner_of(emulator, 25565) == "games"


def test_two_manifests_with_one_owner_are_refused(apps: str, emulator: EmulatorServer) -> None:
    """Two manifests declaring the same owner: one message naming both files, nothing applied from either."""
    emulator.router.add(*XBOX)
    before = snapshot(emulator)
    write(os.path.join(apps, "b-games.yml"), manifest(("minecraft", 25565, 25565), owner="web"))
    run = driven(apps, emulator)
    outcome = run.agent.reconcile()
    assert snapshot(emulator) == before
    assert run.condition("Ready") == ("False", "DuplicateOwner")
    a, b = os.path.join(apps, "a-web.yaml"), os.path.join(apps, "b-games.yml")
    assert f"{a} and {b} both declare owner 'web'" in outcome.message
    assert {s["reason"] for s in sections(run).values()} == {"DuplicateOwner"}


def test_a_later_manifest_plans_on_the_table_the_earlier_one_left(apps: str, emulator: EmulatorServer) -> None:
    """A port both manifests declare goes to the first; the second finds it held by another owner (Conflict)."""
    write(os.path.join(apps, "b-games.yml"), manifest(("minecraft", 25565, 25565), ("alt", 8080, 8000), owner="games"))
    run = driven(apps, emulator)
    run.agent.reconcile()
    assert owner_of(emulator, 8080) == "web"
    assert next(r for r in snapshot(emulator) if r[0] == 8080)[3] == 80
    assert owner_of(emulator, 25565) == "games"
    got = sections(run)
    assert got["b-games.yml"]["reason"] == "Conflict"
    assert got["a-web.yaml"]["reason"] == "ReconciliationSucceeded"
    assert run.condition("Ready") == ("False", "Conflict")


def test_a_directory_without_manifests_is_an_error_the_status_says(tmp_path: Any, emulator: EmulatorServer) -> None:
    """A followed directory holding no *.yaml or *.yml: Ready False, naming the directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    run = driven(str(empty), emulator)
    outcome = run.agent.reconcile()
    assert run.condition("Ready") == ("False", "SourceFetchFailed")
    assert f"the directory {empty} holds no manifest (*.yaml or *.yml)" in outcome.message


def test_a_list_of_files_in_the_config_file_is_followed(tmp_path: Any, emulator: EmulatorServer) -> None:
    """`manifest:` as a list in the agent's config: each file followed with its owner."""
    a = write(str(tmp_path / "web.yaml"), manifest(("web", 8080, 80), owner="web"))
    b = write(str(tmp_path / "games.yaml"), manifest(("minecraft", 25565, 25565), owner="games"))
    conf = write(str(tmp_path / "agent.yaml"), f"manifest:\n  - {a}\n  - {b}\nsettle: 0\n")
    config = build(conf, {})
    assert config.manifest == (a, b)
    run = Driven(None, emulator, manifest=config.manifest, settle=0)
    run.agent.reconcile()
    assert run.condition("Ready") == OK
    assert (owner_of(emulator, 8080), owner_of(emulator, 25565)) == ("web", "games")
    assert [s["file"] for s in run.agent.status.to_json()["manifests"]] == [a, b]


def test_a_repositorys_directory_is_followed_at_one_commit(tmp_path: Any, emulator: EmulatorServer) -> None:
    """`path:` naming a directory of the repository: each manifest in it applied, all at the commit's revision."""
    repo = GitRepo(str(tmp_path / "homelab"))
    os.makedirs(os.path.join(repo.path, "apps"))
    repo.commit(manifest(("web", 8080, 80), owner="web"), name="apps/web.yaml")
    commit = repo.commit(manifest(("minecraft", 25565, 25565), owner="games"), name="apps/games.yaml")
    config = AgentConfig(
        repo=repo.path, path="apps", workdir=str(tmp_path / "checkout"), router=emulator.url, events=False, timeout=30
    )
    agent = Agent(config, log=JsonLog(io.StringIO()))
    agent.reconcile()
    ready = agent.status.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == OK, ready
    assert (owner_of(emulator, 8080), owner_of(emulator, 25565)) == ("web", "games")
    status = agent.status.to_json()
    assert status["lastAppliedRevision"] == f"main@sha1:{commit}"
    assert [s["file"] for s in status["manifests"]] == ["apps/games.yaml", "apps/web.yaml"]


def test_one_file_keeps_its_status_and_gains_one_section(tmp_path: Any, emulator: EmulatorServer) -> None:
    """A single followed file: the top-level fields as before, plus a section for the file."""
    path = write(str(tmp_path / "m.yaml"), manifest(("web", 8080, 80)))
    run = driven(path, emulator)
    outcome = run.agent.reconcile()
    status = run.agent.status.to_json()
    assert outcome.message == f"applied {status['lastAppliedRevision']}: 1 change(s)"
    assert status["lastAppliedRevision"].startswith("sha256:")
    [section] = status["manifests"]
    assert (section["file"], section["owner"], section["lastAppliedRevision"]) == (
        path,
        "homelab",
        status["lastAppliedRevision"],
    )
    assert json.dumps(status)  # one JSON document


def test_readyz_and_agent_status_show_each_manifest(apps: str, emulator: EmulatorServer) -> None:
    """/readyz names each manifest's readiness; `portctl agent status` has a block per manifest with what it owns."""
    from reconciler.cli import _status_text

    write(os.path.join(apps, "b-games.yml"), "owner: [\n")
    config = AgentConfig(manifest=apps, router=emulator.url, settle=0, events=False, timeout=30.0)
    with AgentRun(config, Clock()) as run:
        run.wait_condition("False", "ValidationFailed")
        code, body = run.get("/readyz")
        doc = run.status()
    ready = json.loads(body)
    assert code == 503
    assert [(os.path.basename(m["file"]), m["ready"], m["reason"]) for m in ready["manifests"]] == [
        ("a-web.yaml", True, "ReconciliationSucceeded"),
        ("b-games.yml", False, "ValidationFailed"),
    ]
    text = _status_text(doc)
    assert f"manifest {os.path.join(apps, 'a-web.yaml')} (owner web, sha256:" in text
    assert f"manifest {os.path.join(apps, 'b-games.yml')} (owner ?, nothing applied)" in text
    assert "    8443/tcp    -> 127.0.0.1:443" in text


def test_the_manifest_flag_repeats(tmp_path: Any) -> None:
    """`--manifest` given twice follows both files; given once it is one file, as it always was."""
    from reconciler.cli import _parser

    args = _parser().parse_args(["agent", "--manifest", "a.yaml", "--manifest", "b.yaml"])
    assert build(None, {"manifest": args.manifest}).manifest == ("a.yaml", "b.yaml")
    args = _parser().parse_args(["agent", "--manifest", "a.yaml"])
    assert build(None, {"manifest": args.manifest}).manifest == "a.yaml"
    with pytest.raises(ConfigError, match=r"a\.yaml is given twice"):
        build(None, {"manifest": ["a.yaml", "a.yaml"]})


def test_the_leases_of_every_manifest_are_renewed(apps: str, emulator: EmulatorServer) -> None:
    """Leased mappings of both manifests never lapse over three lease lengths: each manifest's renewals are timed."""
    # The second's leases are the shorter: timing renewals by the first manifest alone would let them lapse.
    write(os.path.join(apps, "a-web.yaml"), manifest(("web", 8080, 80), owner="web", lease="20m"))
    write(os.path.join(apps, "b-games.yml"), manifest(("minecraft", 25565, 25565), owner="games", lease="5m"))
    run = Driven(apps, emulator, settle=0, interval=3600, watch=3600)
    run.agent.reconcile()
    for _ in range(36):  # every 50 s on the clock, for 30 minutes
        run.run_for(50)
        assert {r[0] for r in snapshot(emulator)} == {8080, 25565}


def test_a_manifest_being_written_keeps_its_last_good_revision_while_the_others_apply(
    apps: str, emulator: EmulatorServer
) -> None:
    """With `settle`, a file caught mid-write is not used yet: its last good revision stays, the other file applies."""
    run = Driven(apps, emulator, settle=2, interval=60, watch=30)
    run.agent.reconcile()
    assert run.condition("Ready") == ("Unknown", "SourceSettling")
    assert snapshot(emulator) == []
    run.run_until(lambda: run.condition("Ready") == OK, 5, "both files settled and applied")
    assert {r[0] for r in snapshot(emulator)} == {8080, 8443, 25565}
    web = sections(run)["a-web.yaml"]["lastAppliedRevision"]
    games = manifest(("minecraft", 25565, 25565), ("quake", 27960, 27960), owner="games")
    write(os.path.join(apps, "b-games.yml"), games)
    run.agent.reconcile()  # the agent sees the games edit: it is used once still for 2 s
    assert 27960 not in {r[0] for r in snapshot(emulator)}
    run.clock.advance(2)
    write(os.path.join(apps, "a-web.yaml"), manifest(("web", 8080, 80), owner="web"))  # drops api, mid-write
    run.agent.request_reconcile()
    run.agent.step()  # a pass of the loop: it looks again once the web file may have settled
    assert {r[0] for r in snapshot(emulator)} == {8080, 8443, 25565, 27960}
    got = sections(run)
    assert got["a-web.yaml"]["lastAppliedRevision"] == web
    assert "is used once it has been unchanged for 2s" in got["a-web.yaml"]["message"]
    run.run_until(lambda: 8443 not in {r[0] for r in snapshot(emulator)}, 5, "the settled edit")
    assert run.condition("Ready") == OK
