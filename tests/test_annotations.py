"""--format github: manifest errors, a plan's refusals and its removals as GitHub workflow commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.annotations import command, escape_data, escape_property, plan_commands, problem_commands
from reconciler.emulator import EmulatorServer
from reconciler.errors import Problem
from reconciler.models import (
    Action,
    Change,
    DesiredMapping,
    DesiredPinhole,
    Manifest,
    MappingKey,
    PinholeAction,
    PinholeChange,
    PinholeKey,
    Plan,
    PortMapping,
    Protocol,
    Refusal,
)
from tests.helpers import MANIFEST, portctl, write

TCP = Protocol.TCP


@pytest.mark.parametrize(
    ("text", "data", "prop"),
    [
        ("plain", "plain", "plain"),
        ("100%", "100%25", "100%25"),
        ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
        ("x: y, z", "x: y, z", "x%3A y%2C z"),
        ("%0A is text", "%250A is text", "%250A is text"),
        ("fake\n::error::injected", "fake%0A::error::injected", "fake%0A%3A%3Aerror%3A%3Ainjected"),
    ],
)
def test_workflow_command_escaping(text: str, data: str, prop: str) -> None:
    """Messages escape %, CR and LF; properties also : and , (as @actions/core does)."""
    assert (escape_data(text), escape_property(text)) == (data, prop)


def test_a_command_with_every_property() -> None:
    """File, line, column and title as properties, escaped; a line of 0 leaves line and column out."""
    assert command("error", "bad\nvalue", file="a,b:c.yaml", line=3, col=5, title="t") == (
        "::error file=a%2Cb%3Ac.yaml,line=3,col=5,title=t::bad%0Avalue"
    )
    assert command("warning", "w", file="m.yaml", col=5) == "::warning file=m.yaml::w"
    assert command("notice", "n") == "::notice::n"


def test_manifest_problems_become_errors_on_their_lines() -> None:
    """Each problem is one ::error naming its file, line and column, its JSON path before the message."""
    problems = [
        Problem("m.yaml", 4, 20, "$.mappings[0].external_port", "70000 is greater than the maximum of 65535"),
        Problem("m.yaml", 0, 0, "", "cannot read m.yaml: no such file"),
    ]
    assert problem_commands(problems) == [
        "::error file=m.yaml,line=4,col=20,title=portctl%3A invalid manifest::"
        "$.mappings[0].external_port: 70000 is greater than the maximum of 65535",
        "::error file=m.yaml,title=portctl%3A invalid manifest::cannot read m.yaml: no such file",
    ]


def test_refusals_are_errors_and_removals_warnings_on_the_lines_declaring_them() -> None:
    """A refusal about a mapping or pinhole points at its declaration; one about the plan at the file;
    a removal or replacement is a warning on its mapping's line where the manifest still names it."""
    web, ssh = MappingKey(8080, TCP), MappingKey(2222, TCP)
    manifest = Manifest(
        "m.yaml",
        "o",
        (
            DesiredMapping("web", web, "10.0.0.2", 80, 0, line=4),
            DesiredMapping("ssh", ssh, "10.0.0.2", 22, 0, line=9),
        ),
        pinholes=(DesiredPinhole("ssh", PinholeKey("2001:db8::2", 2222, TCP), 3600, line=15),),
    )
    old = PortMapping(MappingKey(8081, TCP), "10.0.0.2", 80, "pc:x web")
    gone = PortMapping(MappingKey(9000, TCP), "10.0.0.3", 9000, "pc:y old")
    closing = PinholeKey("2001:db8::2", 3000, TCP)
    plan = Plan(
        "o",
        (
            Change(Action.REMOVE, "web", old.key, old, None, "port changed"),
            Change(Action.REMOVE, "old", gone.key, gone, None, "no longer declared"),
            Change(Action.CHANGE, "ssh", ssh, None, None, "client differs", replace=True),
        ),
        (),
        refusals=(
            Refusal("sensitive", "ssh 2222/tcp exposes SSH", "ssh", ssh),
            Refusal("pinhole", "ssh leads to another host", "ssh"),
            Refusal("deletions", "the plan deletes 2 mappings, more than --max-deletions 1"),
        ),
        pinholes=(PinholeChange(PinholeAction.CLOSE, "old6", closing, None, None, "no longer declared"),),
    )
    assert plan_commands(plan, manifest, "m.yaml") == [
        "::error file=m.yaml,line=9,title=portctl%3A refused (sensitive)::ssh 2222/tcp exposes SSH",
        "::error file=m.yaml,line=15,title=portctl%3A refused (pinhole)::ssh leads to another host",
        "::error file=m.yaml,title=portctl%3A refused (deletions)::the plan deletes 2 mappings, more than "
        "--max-deletions 1",
        "::warning file=m.yaml,line=4,title=portctl%3A removed::web 8081/tcp -> 10.0.0.2:80 will be removed: "
        "port changed",
        "::warning file=m.yaml,title=portctl%3A removed::old 9000/tcp -> 10.0.0.3:9000 will be removed: "
        "no longer declared",
        "::warning file=m.yaml,line=9,title=portctl%3A replaced::ssh 2222/tcp will be replaced (deleted, then added): "
        "client differs",
        "::warning file=m.yaml,title=portctl%3A closed::IPv6 pinhole old6 [2001:db8::2]:3000/tcp will be closed: "
        "no longer declared",
    ]


# -- through the CLI ---------------------------------------------------------------------------

BROKEN = """\
apiVersion: portctl/v1
owner: test
mappings:
  - name: web
    external_port: 70000
    internal_client: 127.0.0.1
"""


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_broken_manifest_in_github_format(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """validate and plan --format github exit 1 as text does, each problem an ::error on its line and column."""
    path = write(tmp_path, BROKEN)
    args = [command, path] + (["--router", "http://127.0.0.1:9/rootDesc.xml"] if command == "plan" else [])
    text = portctl(capsys, *args)
    github = portctl(capsys, *args, "--format", "github")
    assert github.code == text.code == 1
    assert "external_port" in text.err and ":5:" in text.err
    [line] = github.out.splitlines()
    assert line.startswith(f"::error file={path},line=5,col=20,title=portctl%3A invalid manifest::")
    assert "$.mappings[0].external_port" in line and github.err == ""


def test_plan_in_github_format_names_the_line_of_a_refused_mapping(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plan the policy refuses: exit 1 as text does, the refusal an ::error on the mapping's manifest line."""
    manifest = (
        "apiVersion: portctl/v1\nowner: pol\npolicy:\n  allowed_internal_clients: [192.168.0.0/16]\n"
        "mappings:\n  - {name: web, external_port: 8080}\n"
    )
    path = write(tmp_path, manifest)
    args = ["plan", path, "--router", emulator.url]
    text = portctl(capsys, *args)
    github = portctl(capsys, *args, "--format", "github")
    assert github.code == text.code == 1
    assert github.out.splitlines()[0] == "Plan: 1 to add, 0 to change, 0 to remove."
    assert f"::error file={path},line=6,title=portctl%3A refused (policy)::web 8080/tcp would forward to" in github.out


def test_plan_in_github_format_warns_of_removals(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the manifest drops a mapping, plan --format github warns that it will be removed, exit 0 as text."""
    path = write(tmp_path, MANIFEST)
    assert portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve").code == 0
    write(tmp_path, MANIFEST.split("  - name: game")[0])
    args = ["plan", path, "--router", emulator.url]
    text = portctl(capsys, *args)
    github = portctl(capsys, *args, "--format", "github")
    assert github.code == text.code == 0
    warnings = [line for line in github.out.splitlines() if line.startswith("::warning ")]
    assert len(warnings) == 4
    assert warnings[0].startswith(f"::warning file={path},title=portctl%3A removed::game 27015/tcp -> 127.0.0.1:27015")
