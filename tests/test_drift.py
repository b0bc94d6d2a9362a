"""Drift modes: `drift: heal|warn|ignore` and `ignore_drift`, from the manifest through the planner to the agent.

Drift is an owned, declared row that changed or vanished on the router while the manifest still asks
for what was applied; the agent heals it, reports it without writing, or leaves it silently."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from reconciler import diff, manifest
from reconciler.emulator import EmulatorServer
from reconciler.errors import ManifestError
from reconciler.models import Action, DesiredMapping, Drift, Manifest, MappingKey, PortMapping, Protocol
from reconciler.render import Style, plan_text
from tests.agenthelp import DEADLINE, Driven, GitRepo
from tests.agenthelp import manifest as manifest_text
from tests.helpers import snapshot
from tests.routerlab import wait_for

WEB = MappingKey(8080, Protocol.TCP)

# -- the manifest ------------------------------------------------------------------------------

HEAD = "apiVersion: portctl/v1\nowner: homelab\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEAD + "mappings:\n  - name: web\n    external_port: 8080\n    drift: sometimes\n",
            "m.yaml:6:12: $.mappings[0].drift: 'sometimes' is not one of ['heal', 'warn', 'ignore']",
        ),
        (
            HEAD + "defaults:\n  drift: Warn\nmappings:\n  - name: web\n    external_port: 8080\n",
            "m.yaml:4:10: $.defaults.drift: 'Warn' is not one of ['heal', 'warn', 'ignore']",
        ),
        (
            HEAD + "mappings:\n  - name: web\n    external_port: 8080\n    ignore_drift: [lease, port]\n",
            "m.yaml:6:27: $.mappings[0].ignore_drift[1]: 'port' is not one of ['lease', 'description']",
        ),
        (
            HEAD + "defaults:\n  ignore_drift: lease\nmappings:\n  - name: web\n    external_port: 8080\n",
            "m.yaml:4:17: $.defaults.ignore_drift: 'lease' is not of type 'array'",
        ),
    ],
)
def test_a_bad_drift_setting_is_one_message_with_its_line(text: str, expected: str) -> None:
    """A drift mode or ignored field that does not exist is refused with exactly one file:line message."""
    with pytest.raises(ManifestError) as caught:
        manifest.parse(text, "m.yaml")
    assert str(caught.value) == expected


def test_drift_settings_come_from_defaults_unless_a_mapping_says_otherwise() -> None:
    """`defaults:` gives every mapping its drift mode and ignored fields; a mapping's own value wins."""
    text = HEAD + (
        "defaults:\n  drift: warn\n  ignore_drift: [lease]\n"
        "mappings:\n  - name: web\n    external_port: 8080\n"
        "  - name: game\n    external_port: 9000\n    drift: ignore\n    ignore_drift: [description, lease]\n"
        "  - name: plain\n    external_port: 9100\n    drift: heal\n    ignore_drift: []\n"
    )
    got = {d.name: (d.drift, d.ignore_drift) for d in manifest.parse(text, "m.yaml").mappings}
    assert got == {
        "web": (Drift.WARN, frozenset({"lease"})),
        "game": (Drift.IGNORE, frozenset({"description", "lease"})),
        "plain": (Drift.HEAL, frozenset()),
    }


# -- the planner -------------------------------------------------------------------------------


def _declared(**kw: Any) -> DesiredMapping:
    settings: dict[str, Any] = {"internal_client": "192.168.1.10", "internal_port": 80, "lease": 0}
    settings.update(kw)
    return DesiredMapping("web", WEB, **settings)


def _plan(d: DesiredMapping, table: list[PortMapping], **kw: Any) -> Any:
    return diff.diff(Manifest("m.yaml", "homelab", (d,)), table, **kw)


def _want(d: DesiredMapping) -> PortMapping:
    return diff.target("homelab", d)


def _moved(d: DesiredMapping, **changes: Any) -> PortMapping:
    """`d`'s row on the router, as someone changed it."""
    from dataclasses import replace

    return replace(_want(d), **changes)


EDITED = _declared(internal_port=81)  # the manifest as edited after `_declared()` was applied


@pytest.mark.parametrize(
    ("why", "table", "applied", "expected"),
    [
        ("a changed owned row, no memory", [_moved(_declared(), internal_port=99)], None, (Action.CHANGE, True)),
        (
            "a changed owned row, applied as wanted now",
            [_moved(_declared(), internal_port=99)],
            {WEB: _want(_declared())},
            (Action.CHANGE, True),
        ),
        ("a missing row that was applied as wanted now", [], {WEB: _want(_declared())}, (Action.ADD, True)),
        ("a missing row never held: a first add", [], None, (Action.ADD, False)),
        (
            "a changed owned row the agent never saw converged (first pass, memory lost)",
            [_moved(_declared(), internal_port=99)],
            {},
            (Action.CHANGE, False),
        ),
        (
            "a changed owned row where the agent remembers only other rows",
            [_moved(_declared(), internal_port=99)],
            {MappingKey(9999, Protocol.UDP): _want(_declared())},
            (Action.CHANGE, False),
        ),
        ("a missing row held before an edit of the manifest", [], {WEB: _want(EDITED)}, (Action.ADD, False)),
        (
            "an edit of the manifest since the row was applied",
            [_want(EDITED)],
            {WEB: _want(EDITED)},
            (Action.CHANGE, False),
        ),
    ],
)
def test_what_counts_as_drift(
    why: str, table: list[PortMapping], applied: dict[MappingKey, PortMapping] | None, expected: tuple[Action, bool]
) -> None:
    """Drift: a change or re-add of a row the manifest still wants as applied; a first add or an edit is not."""
    plan = _plan(_declared(drift=Drift.WARN), table, applied=applied)
    got = [(c.action, c.drift is Drift.WARN) for c in plan.changes]
    assert got == [expected], why


def test_an_edit_of_the_manifest_is_not_drift() -> None:
    """The manifest asks for port 81 where 80 was applied: the change is approved, not drift, and is written."""
    plan = _plan(
        _declared(internal_port=81, drift=Drift.WARN),
        [_want(_declared())],
        applied={WEB: _want(_declared())},
        withhold=True,
    )
    assert [(c.action, c.drift) for c in plan.changes] == [(Action.CHANGE, None)]
    assert plan.withheld == ()


@pytest.mark.parametrize("mode", list(Drift))
def test_withheld_drift_is_warn_and_ignore_only(mode: Drift) -> None:
    """With withhold, drift of warn and ignore mappings leaves the changes for Plan.withheld; heal's stays a change."""
    d = _declared(drift=mode)
    plan = _plan(d, [_moved(d, internal_port=99)], applied={WEB: _want(d)}, withhold=True)
    written = [c.drift for c in plan.changes]
    withheld = [c.drift for c in plan.withheld]
    assert (written, withheld) == (([mode], []) if mode is Drift.HEAL else ([], [mode]))
    assert plan.desired == (_want(d),)


def test_ignore_drift_description_makes_a_changed_description_no_change() -> None:
    """A row whose text after the tag someone changed is no change with ignore_drift: [description]."""
    d = _declared(description="web server", ignore_drift=frozenset({"description"}))
    row = _moved(d, description=_want(d).description.replace("web server", "edited by hand"))
    assert _plan(d, [row]).changes == ()
    assert [c.fields[0].field for c in _plan(_declared(description="web server"), [row]).changes] == ["description"]


def test_ignore_drift_lease_ignores_a_longer_lease_but_still_renews() -> None:
    """ignore_drift: [lease]: a permanent row where 1h is asked is no change; a lease running out is renewed."""
    d = _declared(lease=3600, ignore_drift=frozenset({"lease"}))
    assert _plan(d, [_moved(d, lease=0)]).changes == ()
    assert [c.action for c in _plan(_declared(lease=3600), [_moved(d, lease=0)]).changes] == [Action.CHANGE]
    assert [c.action for c in _plan(d, [_moved(d, lease=60)]).changes] == [Action.RENEW]
    assert all(c.drift is None for c in _plan(d, [_moved(d, lease=60)]).changes)


def test_ignore_drift_does_not_hide_an_edit_of_the_manifest() -> None:
    """A description the manifest changed since it was applied is written even where description drift is ignored."""
    old = _declared(description="web server")
    new = _declared(description="new text", ignore_drift=frozenset({"description"}))
    plan = _plan(new, [_want(old)], applied={WEB: _want(old)})
    assert [(c.action, c.drift, c.fields[0].field) for c in plan.changes] == [(Action.CHANGE, None, "description")]


def test_the_plan_says_which_changes_are_drift_and_their_mode() -> None:
    """`portctl plan` marks a drift change with its mapping's mode and that a hand apply writes it."""
    d = _declared(drift=Drift.WARN)
    text = plan_text(_plan(d, [_moved(d, internal_port=99)]), Style(False))
    assert "drift (warn): the router's row changed or went behind portctl's back; the agent only reports it" in text
    assert "portctl apply writes it" in text


# -- the agent ---------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        import json

        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    server = HTTPServer(("127.0.0.1", 0), type("Hook", (_Hook,), {"received": received}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/portctl", received
    server.shutdown()
    server.server_close()


def _agent(tmp_path: Any, emulator: EmulatorServer, mode: str, ignore: str = "", **kw: Any) -> tuple[GitRepo, Driven]:
    """An agent following a repo whose manifest declares web (8080 -> 80) and ssh (2222 -> 2200) with `mode`."""
    repo = GitRepo(str(tmp_path / "homelab"))
    repo.commit(_text(mode, ignore))
    run = Driven(None, emulator, repo=repo.path, workdir=str(tmp_path / "checkout"), interval=2, watch=1, **kw)
    assert run.agent.reconcile().result == "changed"
    return repo, run


def _text(mode: str, ignore: str = "", ssh_port: int = 2200) -> str:
    extra = f"  drift: {mode}\n" + (f"  ignore_drift: [{ignore}]\n" if ignore else "")
    return manifest_text(("web", 8080, 80), ("ssh", 2222, ssh_port)).replace("defaults:\n", "defaults:\n" + extra)


def _row(emulator: EmulatorServer, port: int) -> tuple[object, ...] | None:
    return next((r for r in snapshot(emulator) if r[0] == port), None)


def _tamper(emulator: EmulatorServer) -> None:
    """Another client edits web's internal port and deletes ssh."""
    web = _row(emulator, 8080)
    assert web is not None
    emulator.router.add(8080, "TCP", "127.0.0.1", 81, str(web[4]))
    assert emulator.router.remove(2222, "TCP")


def _warnings(run: Driven) -> list[str]:
    return [e["msg"] for e in run.log_lines() if e["level"] == "warning"]


def test_heal_rewrites_a_changed_row_and_restores_a_deleted_one(emulator: EmulatorServer, tmp_path: Any) -> None:
    """drift: heal puts the changed row back and re-adds the deleted one on the next pass."""
    _, run = _agent(tmp_path, emulator, "heal")
    healthy = snapshot(emulator)
    _tamper(emulator)
    assert run.agent.reconcile().result == "changed"
    assert sorted(snapshot(emulator), key=str) == sorted(healthy, key=str)
    assert run.metric("portctl_drift_mappings") == 0


def test_warn_leaves_drift_and_reports_it(
    emulator: EmulatorServer, tmp_path: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """drift: warn writes nothing for the drifted rows and says so: log, Drifted condition, metrics, webhook."""
    url, received = webhook
    emulator.router.add(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")
    _, run = _agent(tmp_path, emulator, "warn", webhook=url)
    wait_for(lambda: len(received) == 1, DEADLINE, "the first pass's webhook")
    _tamper(emulator)
    tampered = snapshot(emulator)
    for _ in range(3):  # reported once, left alone every pass
        run.clock.advance(2)
        outcome = run.agent.reconcile()
        assert snapshot(emulator) == tampered
    assert (outcome.result, outcome.reason) == ("unchanged", "DriftDetected")
    assert run.condition("Ready") == ("True", "DriftDetected")
    drifted = run.agent.status.condition("Drifted")
    assert drifted is not None and (drifted.status, drifted.reason) == ("True", "DriftDetected")
    words = [
        "drift on 8080/tcp -> 127.0.0.1:81 (web): internal_port 81 -> 80; left as is (drift: warn)",
        "drift on 2222/tcp -> 127.0.0.1:2200 (ssh): gone from the router; left as is (drift: warn)",
    ]
    assert drifted.message == "; ".join(words)
    assert _warnings(run) == words
    assert run.metric("portctl_drift_mappings") == 2
    assert run.metric("portctl_drift_detected_total") == 2
    wait_for(lambda: len(received) == 2, DEADLINE, "the drift webhook")
    assert received[1]["drift"] == words and received[1]["result"] == "unchanged"
    assert [r for r in snapshot(emulator) if r[0] == 3074] == [(3074, "UDP", "127.0.0.9", 3074, "Xbox Live")]


def test_warn_applies_an_edit_of_the_manifest_and_drift_ends_when_the_row_is_back(
    emulator: EmulatorServer, tmp_path: Any
) -> None:
    """Under warn a commit changing ssh's port is written (approved), and drift fixed by hand clears the report."""
    repo, run = _agent(tmp_path, emulator, "warn")
    _tamper(emulator)
    run.agent.reconcile()
    assert run.metric("portctl_drift_mappings") == 2
    repo.commit(_text("warn", ssh_port=2201))
    run.clock.advance(2)
    run.agent.reconcile()
    assert _row(emulator, 2222) is not None and _row(emulator, 2222)[3] == 2201  # type: ignore[index]
    web = _row(emulator, 8080)
    assert web is not None and web[3] == 81  # still drifted, still left
    emulator.router.add(8080, "TCP", "127.0.0.1", 80, str(web[4]))  # someone puts it back
    run.clock.advance(2)
    run.agent.reconcile()
    assert run.metric("portctl_drift_mappings") == 0
    assert run.condition("Ready") == ("True", "ReconciliationSucceeded")
    assert run.condition("Drifted") == ("False", "NoDrift")


def _restarted(tmp_path: Any, emulator: EmulatorServer, before: Driven) -> Driven:
    """A new agent process in place of `before` (stopped), on the same repository, checkout, cache and clock."""
    return Driven(
        None,
        emulator,
        before.clock,
        repo=str(tmp_path / "homelab"),
        workdir=str(tmp_path / "checkout"),
        interval=2,
        watch=1,
    )


def _passes(run: Driven, count: int = 3) -> None:
    for _ in range(count):
        run.clock.advance(2)
        run.agent.reconcile()


XBOX = (3074, "UDP", "127.0.0.9", 3074, "Xbox Live")


def test_warn_writes_an_edit_merged_while_the_agent_was_down(emulator: EmulatorServer, tmp_path: Any) -> None:
    """An approved commit (ssh 2200 -> 2201) merged while a warn agent was down is written by the next agent."""
    emulator.router.add(*XBOX)
    repo, first = _agent(tmp_path, emulator, "warn")
    repo.commit(_text("warn", ssh_port=2201))
    run = _restarted(tmp_path, emulator, first)
    _passes(run)
    assert _row(emulator, 2222) is not None and _row(emulator, 2222)[3] == 2201  # type: ignore[index]
    assert _row(emulator, 8080) is not None and _row(emulator, 8080)[3] == 80  # type: ignore[index]
    assert run.condition("Ready") == ("True", "ReconciliationSucceeded")
    assert run.agent.status.condition("Drifted") is None
    assert _warnings(run) == []
    assert _row(emulator, 3074) == XBOX


def test_warn_still_reports_drift_made_while_the_agent_was_down(emulator: EmulatorServer, tmp_path: Any) -> None:
    """Rows changed and deleted behind a stopped warn agent are left and reported by the next one, which remembers."""
    emulator.router.add(*XBOX)
    _, first = _agent(tmp_path, emulator, "warn")
    _tamper(emulator)
    tampered = snapshot(emulator)
    run = _restarted(tmp_path, emulator, first)
    _passes(run)
    assert snapshot(emulator) == tampered
    assert run.condition("Ready") == ("True", "DriftDetected")
    assert _warnings(run) == [
        "drift on 8080/tcp -> 127.0.0.1:81 (web): internal_port 81 -> 80; left as is (drift: warn)",
        "drift on 2222/tcp -> 127.0.0.1:2200 (ssh): gone from the router; left as is (drift: warn)",
    ]
    assert _row(emulator, 3074) == XBOX


@pytest.mark.parametrize(
    "corrupt",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[" * 100_000,
        b'{"version": 1, "entries": []}',
        b'{"version": 7, "entries": {}}',
    ],
    ids=["torn", "binary", "nested", "wrong shape", "other version"],
)
def test_a_corrupt_drift_memory_is_no_memory(
    emulator: EmulatorServer, tmp_path: Any, router_cache: str, corrupt: bytes
) -> None:
    """An unreadable drift memory reads as none: one warning, no traceback, and an approved edit is written."""
    emulator.router.add(*XBOX)
    repo, first = _agent(tmp_path, emulator, "warn")
    with open(f"{router_cache}/applied.json", "wb") as f:
        f.write(corrupt)
    repo.commit(_text("warn", ssh_port=2201))
    run = _restarted(tmp_path, emulator, first)
    _passes(run)
    assert _row(emulator, 2222) is not None and _row(emulator, 2222)[3] == 2201  # type: ignore[index]
    assert run.condition("Ready") == ("True", "ReconciliationSucceeded")
    assert run.errors() == []
    assert "Traceback" not in run.logs.getvalue()
    assert [w for w in _warnings(run) if "drift memory" in w] == [_warnings(run)[0]]
    assert _row(emulator, 3074) == XBOX


def test_the_drift_memory_is_kept_again_after_it_was_lost(
    emulator: EmulatorServer, tmp_path: Any, router_cache: str
) -> None:
    """After a pass with no memory, the rows it saw converged are remembered: a later deletion is drift again."""
    _, first = _agent(tmp_path, emulator, "warn")
    with open(f"{router_cache}/applied.json", "wb") as f:
        f.write(b"{not json")
    second = _restarted(tmp_path, emulator, first)
    _passes(second, 1)
    assert emulator.router.remove(2222, "TCP")
    run = _restarted(tmp_path, emulator, second)
    _passes(run)
    assert _row(emulator, 2222) is None
    assert run.condition("Ready") == ("True", "DriftDetected")


def test_ignore_leaves_drift_silently(emulator: EmulatorServer, tmp_path: Any) -> None:
    """drift: ignore writes nothing for the drifted rows and reports nothing."""
    _, run = _agent(tmp_path, emulator, "ignore")
    _tamper(emulator)
    tampered = snapshot(emulator)
    run.clock.advance(2)
    outcome = run.agent.reconcile()
    assert snapshot(emulator) == tampered
    assert (outcome.result, outcome.reason) == ("unchanged", "ReconciliationSucceeded")
    assert _warnings(run) == []
    assert run.agent.status.condition("Drifted") is None
    assert (run.metric("portctl_drift_mappings"), run.metric("portctl_drift_detected_total")) == (0, 0)


def test_ignore_drift_description_leaves_an_edited_description(emulator: EmulatorServer, tmp_path: Any) -> None:
    """With ignore_drift: [description] under heal, text edited after the tag stays; a changed port is still healed."""
    _, run = _agent(tmp_path, emulator, "heal", ignore="description")
    web = _row(emulator, 8080)
    assert web is not None
    edited = f"{web[4]} edited"
    emulator.router.add(8080, "TCP", "127.0.0.1", 80, edited)
    run.clock.advance(2)
    assert run.agent.reconcile().result == "unchanged"
    assert _row(emulator, 8080) == (8080, "TCP", "127.0.0.1", 80, edited)
    emulator.router.add(8080, "TCP", "127.0.0.1", 81, edited)
    run.clock.advance(2)
    assert run.agent.reconcile().result == "changed"
    assert _row(emulator, 8080) == web


def test_ignore_drift_lease_still_renews(emulator: EmulatorServer, tmp_path: Any) -> None:
    """With ignore_drift: [lease] a finite lease is still renewed before it runs out, on the shared clock."""
    repo = GitRepo(str(tmp_path / "homelab"))
    repo.commit(
        manifest_text(("web", 8080, 80), lease="60").replace("defaults:\n", "defaults:\n  ignore_drift: [lease]\n")
    )
    run = Driven(None, emulator, repo=repo.path, workdir=str(tmp_path / "checkout"), interval=600, watch=600)
    run.run_for(300)  # five leases' worth
    assert _row(emulator, 8080) is not None
    assert run.metric('portctl_igd_requests_total{action="AddPortMapping",upnp_error=""}') >= 5
