"""The agent's settings and its command-line client: one clear message for every bad input."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from reconciler.agent.config import AgentConfig, ConfigError, build
from reconciler.yamldoc import MAX_BYTES, MAX_DEPTH
from tests.helpers import billion_laughs, portctl, write

NO_FLAGS: dict[str, Any] = {}


def test_the_config_file_uses_the_flag_names_and_flags_override_it(tmp_path: Any) -> None:
    """Keys are the long flag names; a flag given on the command line wins over the file."""
    path = write(tmp_path, "repo: https://git.example/homelab.git\ninterval: 5m\nverify-signatures: true\n", "a.yaml")
    config = build(path, {"interval": "30s", "ref": None})
    assert config == AgentConfig(repo="https://git.example/homelab.git", interval=30, verify_signatures=True)


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        ("repo: x\nintervall: 5m\n", NO_FLAGS, "unknown setting 'intervall'"),
        ("repo: x\ninterval: soon\n", NO_FLAGS, "interval: 'soon' is not a duration"),
        ("repo: x\nrelease-on-exit: yes please\n", NO_FLAGS, "release-on-exit: 'yes please' is not true or false"),
        ("repo: [\n", NO_FLAGS, "a.yaml:2:1: invalid YAML"),
        ("- repo\n", NO_FLAGS, "expected a mapping of settings"),
        ("interval: 60\n", NO_FLAGS, "give the manifest's source"),
        ("repo: x\n", {"manifest": "m.yaml"}, "not both"),
        ("repo: x\nlisten: localhost\n", NO_FLAGS, "a.yaml:2:9: listen: 'localhost' is not HOST:PORT"),
        ("repo: x\njitter: 2\n", NO_FLAGS, "jitter must be a share between 0 and 1"),
        ("repo: x\nallowed-signers: /etc/portctl/signers\n", NO_FLAGS, "only used with verify-signatures"),
    ],
)
def test_bad_settings_are_refused_with_one_clear_message(
    tmp_path: Any, text: str, flags: dict[str, Any], message: str
) -> None:
    """Every bad setting names the file and the setting."""
    path = write(tmp_path, text, "a.yaml")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build(path, flags)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), r"a\.yaml:\d+:\d+: the agent config expands to more than 50000 values \(aliases repeat\)$"),
        ("repo: " + "[" * 5000 + "]" * 5000 + "\n", rf"a\.yaml:1:{MAX_DEPTH + 6}: the agent config nests deeper than"),
        ("repo: &a [*a]\n", r"a\.yaml:1:11: the alias \*a is inside the value it names$"),
        ("repo: x\n" + "# padding\n" * (MAX_BYTES // 10), rf"a\.yaml:\d+:1: the agent config goes past {MAX_BYTES}"),
        ("repo: x\nrelease-on-exit: yes\n", r"a\.yaml:2:18: release-on-exit: 'yes' is not true or false$"),
        ("repo: x\n\n# how often\ninterval: soon\n", r"a\.yaml:4:11: interval: 'soon' is not a duration"),
        ("repo: x\n  # indented\nintervall: 5m\n", r"a\.yaml:3:1: unknown setting 'intervall'"),
        ("repo: x\nevents-port: 70000\n", r"a\.yaml:2:14: events-port must be a port"),
        (
            "repo: x\nmax-deletions: 1\nmax_deletions: 5\n",
            r"a\.yaml:3:1: 'max_deletions' sets max-deletions a second time$",
        ),
    ],
)
def test_the_config_file_is_read_within_bounds_and_located(tmp_path: Any, text: str, message: str) -> None:
    """The config file is read like a manifest: bounded, YAML 1.2, and every problem at its file:line:column."""
    path = write(tmp_path, text, "a.yaml")
    with pytest.raises(ConfigError) as raised:
        build(path, NO_FLAGS)
    assert re.match(f"^{re.escape(str(tmp_path))}/{message}", str(raised.value)), str(raised.value)


def test_yaml_1_1_words_are_text_in_the_config_file(tmp_path: Any) -> None:
    """`ref: no` names a branch called "no" (YAML 1.1 would read false); `webhook: on` is text, not true."""
    path = write(tmp_path, "repo: x\nref: no\nwebhook: on\n", "a.yaml")
    config = build(path, NO_FLAGS)
    assert (config.ref, config.webhook) == ("no", "on")


def test_a_bad_flag_is_blamed_on_the_command_line_not_the_file(tmp_path: Any) -> None:
    """With a config file given, a bad --interval is the command line's problem, not the file's."""
    path = write(tmp_path, "repo: x\ninterval: 5m\n", "a.yaml")
    with pytest.raises(ConfigError, match=r"^the command line: interval: 'soon' is not a duration"):
        build(path, {"interval": "soon"})


@pytest.mark.parametrize("verb", [[], ["status"]])
def test_an_unbounded_config_is_one_line_and_exit_1(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], verb: list[str]
) -> None:
    """`portctl agent` and `portctl agent status` refuse a billion-laughs config with one located line, exit 1."""
    path = write(tmp_path, billion_laughs(), "agent.yaml")
    run = portctl(capsys, "agent", *verb, "--config", path)
    assert run.code == 1
    expected = rf"error: {re.escape(path)}:\d+:\d+: the agent config expands to more than 50000 values.*\n"
    assert re.fullmatch(expected, run.err), run.err


def test_a_bad_config_is_one_line_and_exit_1(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints the problem without a traceback and exits 1."""
    path = write(tmp_path, "repo: x\ninterval: soon\n", "agent.yaml")
    run = portctl(capsys, "agent", "--config", path)
    assert run.code == 1
    assert run.err == f"error: {path}:2:11: interval: 'soon' is not a duration (examples: 3600, 90m, 1h30m, 7d)\n"


def test_the_client_says_when_no_agent_is_running(capsys: pytest.CaptureFixture[str]) -> None:
    """`portctl agent status` with nothing listening explains itself and exits 1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # bound but not listening: connections are refused
        run = portctl(capsys, "agent", "status", "--listen", f"127.0.0.1:{free}")
    assert run.code == 1
    assert run.err.startswith(f"error: no agent answers at 127.0.0.1:{free}")
    assert "is `portctl agent` running?" in run.err


def test_the_example_agent_config_is_valid() -> None:
    """examples/agent.yaml, which the systemd unit and the Dockerfile use, loads."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = build(os.path.join(here, "examples", "agent.yaml"), NO_FLAGS)
    assert config.repo and config.interval >= 60 and config.listen == "127.0.0.1:9477"


def test_the_systemd_unit_is_valid_and_hardened(tmp_path: Any) -> None:
    """examples/portctl-agent.service passes systemd-analyze verify and keeps its hardening settings."""
    import shutil
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "examples", "portctl-agent.service")) as f:
        unit = f.read()
    for setting in ("DynamicUser=yes", "NoNewPrivileges=yes", "Restart=on-failure", "ProtectSystem=strict"):
        assert f"\n{setting}\n" in unit, setting
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    portctl_bin = os.path.join(os.path.dirname(sys.executable), "portctl")
    path = write(tmp_path, unit.replace("/usr/local/bin/portctl", portctl_bin), "portctl-agent.service")
    done = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_local_manifest_file_is_a_source_whose_revision_follows_its_content(tmp_path: Any) -> None:
    """--manifest FILE: the revision is a hash of the content, so an edit is a new revision; a missing file fails."""
    from reconciler.agent.source import FileSource, SourceError

    path = write(tmp_path, "owner: a\n")
    source = FileSource(path)
    first = source.fetch()
    write(tmp_path, "owner: b\n")
    second = source.fetch()
    assert first.revision.startswith("sha256:") and first.revision != second.revision
    assert second.path == path
    os.remove(path)
    with pytest.raises(SourceError, match="cannot read"):
        source.fetch()


def test_a_git_source_that_cannot_fetch_names_the_ref_and_the_remote(tmp_path: Any) -> None:
    """A missing branch gives one SourceError naming what git could not do."""
    from reconciler.agent.source import GitSource, SourceError
    from tests.agenthelp import GitRepo

    repo = GitRepo(str(tmp_path / "homelab"))
    repo.commit("owner: a\n")
    source = GitSource(repo.path, "production", "mappings.yaml", str(tmp_path / "checkout"))
    with pytest.raises(SourceError, match=r"git could not fetch production from file://.*homelab"):
        source.fetch()


def test_a_followed_repositorys_credentials_are_never_shown(tmp_path: Any) -> None:
    """A repository URL carrying a token: what the status, the log and webhooks say of the source, and
    git's failure to reach it, name it without the token (a closed port on loopback: nothing leaves the host)."""
    from reconciler.agent.source import GitSource, SourceError

    url = "https://portctl:ghp_SECRET123@127.0.0.1:9/homelab.git?token=ALSOSECRET"
    source = GitSource(url, "main", "mappings.yaml", str(tmp_path / "checkout"))
    assert "SECRET" not in source.describe() and "127.0.0.1:9/homelab.git" in source.describe()
    with pytest.raises(SourceError) as failed:
        source.fetch()
    assert "SECRET" not in str(failed.value) and "127.0.0.1:9" in str(failed.value)
