"""`portctl demo`: automatic on the built-in emulator; on a given router, apply's approval, its own
owner and no prune. A spec emulator passed with --router stands in for a real router here;
tests/test_real_demo.py runs the same on miniupnpd, through `make demo` and a pty.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from reconciler import demo
from reconciler.emulator import EmulatorServer
from reconciler.manifest import load, starter_owner
from tests.helpers import FOREIGN, portctl, snapshot, write

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEMO_FILE = str(EXAMPLES / "demo.yaml")
DEMO_ROWS = {(8080, "TCP", 80), (25565, "TCP", 25565), (51413, "TCP", 51413), (51413, "UDP", 51413)}
HOMELAB = """\
apiVersion: portctl/v1
owner: homelab
defaults:
  internal_client: 127.0.0.1
mappings:
  - {name: nas, external_port: 7000}
"""
OLD_DEMO = """\
apiVersion: portctl/v1
owner: portctl-demo
prune: false
defaults:
  internal_client: 127.0.0.1
mappings:
  - {name: leftover, external_port: 7500}
"""


class Terminal(io.StringIO):
    """Standard input that is a terminal, with the user's answer already typed."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def router(emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> EmulatorServer:
    """A router holding a foreign mapping, the user's own `homelab` one and a leftover of an earlier demo."""
    emulator.router.add(*FOREIGN)
    for name, text in (("homelab.yaml", HOMELAB), ("old-demo.yaml", OLD_DEMO)):
        run = portctl(capsys, "apply", write(tmp_path, text, name), "--router", emulator.url, "--auto-approve")
        assert run.code == 0, run.out + run.err
    return emulator


def rows(server: EmulatorServer) -> set[tuple[object, ...]]:
    return {(port, proto, iport) for port, proto, _client, iport, _desc in snapshot(server)}


def demo_on(
    server: EmulatorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: io.StringIO
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", stdin)
    run = portctl(capsys, "demo", DEMO_FILE, "--router", server.url, "--no-color")
    return run.code, run.out, run.err


def test_emulator_demo_runs_without_asking_as_its_own_owner(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` with no router plans and applies examples/demo.yaml on the emulator, as portctl-demo, unasked."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.delenv("PORTCTL_ROUTER", raising=False)
    run = portctl(capsys, "demo", "--no-color")
    assert run.code == 0, run.out + run.err
    assert "$ portctl apply examples/demo.yaml --auto-approve" in run.out
    assert "Apply: 4 done, 0 failed." in run.out
    assert f'No changes: the router matches the manifest for owner "{demo.OWNER}".' in run.out


def test_demo_on_a_router_without_a_terminal_shows_the_plan_and_changes_nothing(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --router and no terminal the demo prints the plan, writes nothing, says why and exits 1."""
    before = snapshot(router)
    code, out, err = demo_on(router, capsys, monkeypatch, io.StringIO(""))
    assert (code, snapshot(router)) == (1, before)
    assert "Plan: 4 to add, 0 to change, 0 to remove." in out
    assert "answer 'yes' on a terminal, and its input is not a terminal: nothing was changed" in err


def test_demo_on_a_router_answered_no_changes_nothing(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal the demo asks; any answer but yes leaves the router as it was."""
    before = snapshot(router)
    code, out, err = demo_on(router, capsys, monkeypatch, Terminal("no\n"))
    assert (code, snapshot(router)) == (1, before)
    assert "Only 'yes' will be accepted" in out
    assert "not applied: the answer was not 'yes'" in err


def test_demo_on_a_router_answered_yes_adds_its_rows_and_removes_nothing(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """yes applies the demo's rows; the user's, the foreign and an earlier demo's leftover row stay byte-identical."""
    before = snapshot(router)
    code, out, err = demo_on(router, capsys, monkeypatch, Terminal("yes\n"))
    assert code == 0, out + err
    assert rows(router) == {(p, pr, ip) for p, pr, _c, ip, _d in before} | DEMO_ROWS
    assert set(before) <= set(snapshot(router))
    assert f"portctl destroy {DEMO_FILE} --router {router.url}" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HOMELAB.replace("owner: homelab", "owner: homelab\nprune: false"),
            [":2:8: $.owner: the demo writes to a real router only as owner 'portctl-demo'"],
        ),
        (
            OLD_DEMO.replace("prune: false", "prune: true"),
            [":3:8: $.prune: the demo never prunes on a real router"],
        ),
        (
            OLD_DEMO.replace("prune: false\n", ""),
            [":1:1: $.prune: the demo never prunes on a real router: set `prune: false`"],
        ),
        (
            OLD_DEMO.replace("external_port: 7500}", f"external_port: {FOREIGN[0]}, on_conflict: takeover}}"),
            [":7:56: $.mappings[0].on_conflict: leftover: the demo never takes over another mapping's port"],
        ),
    ],
)
def test_demo_on_a_router_refuses_what_could_touch_other_mappings(
    text: str,
    expected: list[str],
    router: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another owner, prune or takeover: refused with file and line, nothing written, even on a terminal."""
    path = write(tmp_path, text, "mine.yaml")
    before = snapshot(router)
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    run = portctl(capsys, "demo", path, "--router", router.url, "--no-color")
    assert (run.code, run.out, snapshot(router)) == (1, "", before)
    assert run.err.startswith("error: ") and len(run.err.splitlines()) == len(expected), run.err
    assert all(f"{path}{line}" in run.err for line in expected), run.err


def test_examples_use_owners_that_say_where_they_come_from() -> None:
    """Each example's owner names its file; the demo's is its own; `portctl init` never writes the demo's."""
    owners = {p.name: load(str(p)).owner for p in sorted(EXAMPLES.glob("*.yaml")) if p.name != "agent.yaml"}
    expected = {name: f"example-{name.removesuffix('.yaml')}" for name in owners if name != "demo.yaml"}
    assert owners == {**expected, "demo.yaml": demo.OWNER}
    assert not starter_owner("portctl-demo", "ab12").startswith(demo.OWNER)


def test_the_demo_manifest_opens_no_sensitive_port() -> None:
    """examples/demo.yaml needs no allow_sensitive: nothing in it is a privileged port or a risky service."""
    manifest = load(DEMO_FILE)
    assert not any(m.allow_sensitive for m in manifest.mappings)
    assert not manifest.prune
