"""The agent commits the router's snapshot to a branch of a repository (`snapshot: {git: ...}`), for a
hosted CI runner to plan against.

The remote is a bare repository in tmp_path, as a homelab's repository on a git host would be: the
admin pushes main to it, the agent follows it and pushes the branch `portctl-snapshot` to it. The
branch's `git log` in that repository is the witness. The loop is turned on a virtual clock the
emulated router shares (`Driven`), so "the next pass" is a statement about that clock."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.agent import publish
from reconciler.agent.config import ConfigError, build
from reconciler.emulator import EmulatorServer
from reconciler.snapshot import decode
from tests.agenthelp import GIT_ENV, Driven, GitRepo, manifest
from tests.helpers import FOREIGN, write

OK = ("True", "ReconciliationSucceeded")
AGENT = "portctl agent <portctl@lab.test>"
BRANCH = "portctl-snapshot"
INTERVAL = 10


def git(gitdir: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", f"--git-dir={gitdir}", *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def history(remote: Path) -> list[dict[str, Any]]:
    """The snapshot branch's commits in the remote, newest first: who made them, their parents, the snapshot."""
    listed = subprocess.run(
        ["git", f"--git-dir={remote}", "log", "--format=%H%x09%an <%ae>%x09%cn <%ce>%x09%P", BRANCH, "--"],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if listed.returncode != 0:  # no branch yet
        return []
    commits = []
    for line in listed.stdout.splitlines():
        sha, author, committer, parents = line.split("\t")
        files = git(remote, "ls-tree", "--name-only", sha).split()
        doc = json.loads(git(remote, "cat-file", "-p", f"{sha}:snapshot.json")) if "snapshot.json" in files else None
        commits.append({"sha": sha, "author": author, "committer": committer, "parents": parents.split(), "doc": doc})
    return commits


def rows(doc: dict[str, Any]) -> set[tuple[int, str]]:
    return {(m["key"]["external_port"], m["owner"]) for m in doc["mappings"]}


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The homelab's repository (bare, as on a git host) with a manifest on main. The user running the
    agent has a global git identity of their own, which the agent's commits must not take."""
    identity = tmp_path / "gitconfig"
    identity.write_text("[user]\n\tname = Someone Else\n\temail = someone@else.test\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(identity))
    bare = tmp_path / "homelab.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    work = GitRepo(str(tmp_path / "work"))
    work.commit(manifest(("web", 8080, 80)))
    work.git("push", "--quiet", str(bare), "main")
    return bare


def follow(origin: Path, emulator: EmulatorServer, tmp_path: Path, **target: Any) -> Driven:
    """An agent following `origin`'s main that commits its snapshot to `origin` (unless told another remote)."""
    git_target = publish.GitTarget(author=AGENT, **target)
    return Driven(
        None,
        emulator,
        repo=str(origin),
        workdir=str(tmp_path / "checkout"),
        snapshot_git=git_target,
        interval=INTERVAL,
        watch=5,
        wall_too=True,
    )


def first_pass(run: Driven) -> None:
    run.run_until(lambda: run.condition("Ready") == OK, 0, "the first pass")


def test_the_first_pass_commits_the_snapshot_with_the_agents_identity(
    remote: Path, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """After the first pass the branch holds one commit by the agent's identity with the snapshot the pass left."""
    emulator.router.add(*FOREIGN)
    run = follow(remote, emulator, tmp_path)
    first_pass(run)
    commits = history(remote)
    assert [(c["author"], c["committer"], c["parents"]) for c in commits] == [(AGENT, AGENT, [])]
    snap = decode(commits[0]["doc"])
    assert snap.read_at == run.clock()
    assert rows(commits[0]["doc"]) == {(8080, "owned"), (FOREIGN[0], "foreign")}
    assert run.errors() == []


def test_the_followed_branch_and_its_checkout_are_untouched(
    remote: Path, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Publishing adds the snapshot branch only: main keeps its commit, the checkout its commit and clean tree."""
    main = git(remote, "rev-parse", "main").strip()
    run = follow(remote, emulator, tmp_path)
    first_pass(run)
    emulator.router.add(*FOREIGN)
    run.run_until(lambda: len(history(remote)) == 2, INTERVAL * 2, "the second snapshot")
    assert git(remote, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main", f"refs/heads/{BRANCH}"]
    assert git(remote, "rev-parse", "main").strip() == main
    checkout = tmp_path / "checkout"
    assert git(checkout / ".git", "rev-parse", "HEAD").strip() == main
    assert git(checkout / ".git", f"--work-tree={checkout}", "status", "--porcelain", "--ignored") == ""
    assert BRANCH not in git(checkout / ".git", "for-each-ref")


def test_a_pass_with_no_change_commits_nothing(remote: Path, emulator: EmulatorServer, tmp_path: Path) -> None:
    """Passes that find the router as the branch has it add no commit, though leases count down meanwhile."""
    remote_main = git(remote, "rev-parse", "main").strip()
    work = GitRepo(str(tmp_path / "work"))
    work.commit(manifest(("web", 8080, 80), lease="1h"))  # a finite lease: its seconds left move at every pass
    work.git("push", "--quiet", str(remote), "main")
    assert git(remote, "rev-parse", "main").strip() != remote_main
    run = follow(remote, emulator, tmp_path)
    first_pass(run)
    before = run.passes()
    run.run_for(INTERVAL * 6)
    assert run.passes() - before >= 4
    commits = history(remote)
    assert len(commits) == 1
    assert run.errors() == []


def test_a_changed_table_commits_again(remote: Path, emulator: EmulatorServer, tmp_path: Path) -> None:
    """A mapping appearing on the router is committed at the next pass, on top of the previous snapshot."""
    run = follow(remote, emulator, tmp_path)
    first_pass(run)
    [first] = history(remote)
    emulator.router.add(*FOREIGN)
    run.run_until(lambda: len(history(remote)) == 2, INTERVAL * 2, "the second snapshot")
    second = history(remote)[0]
    assert second["parents"] == [first["sha"]]
    assert (second["author"], second["committer"]) == (AGENT, AGENT)
    assert rows(first["doc"]) == {(8080, "owned")}
    assert rows(second["doc"]) == {(8080, "owned"), (FOREIGN[0], "foreign")}


def test_an_unchanged_snapshot_is_committed_again_once_it_is_refresh_old(
    remote: Path, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """With refresh 1h, a quiet router's snapshot is committed again an hour after the last one, not before."""
    run = follow(remote, emulator, tmp_path, refresh=3600)
    first_pass(run)
    run.run_for(3600 - 2 * INTERVAL)
    assert len(history(remote)) == 1
    run.run_until(lambda: len(history(remote)) == 2, 4 * INTERVAL, "the refreshed snapshot")
    newest, oldest = history(remote)
    assert newest["doc"]["read_at"]["epoch"] - oldest["doc"]["read_at"]["epoch"] >= 3600
    assert publish.content(newest["doc"]) == publish.content(oldest["doc"])


def test_other_files_on_the_branch_are_kept(remote: Path, emulator: EmulatorServer, tmp_path: Path) -> None:
    """A README someone committed to the snapshot branch stays there when the agent commits on top of it."""
    work = GitRepo(str(tmp_path / "work"))
    work.git("checkout", "--quiet", "--orphan", BRANCH)
    work.git("rm", "--quiet", "-r", "--cached", ".")
    Path(work.path, "README.md").write_text("The portctl agent's snapshots.\n")
    work.git("add", "README.md")
    work.git("commit", "--quiet", "-m", "explain the branch")
    work.git("push", "--quiet", str(remote), BRANCH)
    readme = git(remote, "rev-parse", BRANCH).strip()
    run = follow(remote, emulator, tmp_path)
    first_pass(run)
    commit = history(remote)[0]
    assert commit["parents"] == [readme]
    assert git(remote, "ls-tree", "--name-only", commit["sha"]).split() == ["README.md", "snapshot.json"]


def test_an_unreachable_remote_is_logged_once_and_does_not_fail_the_pass(
    remote: Path, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A remote that cannot be reached is one error for all the passes it lasts; the router is still converged,
    Ready stays true, and the snapshot is pushed at the first pass after the remote is back."""
    gone = tmp_path / "elsewhere.git"
    run = follow(remote, emulator, tmp_path, remote=str(gone))
    first_pass(run)
    run.run_for(INTERVAL * 4)
    assert run.passes() >= 4
    assert 8080 in {e.external_port for e in emulator.router.rows()}
    assert run.condition("Ready") == OK
    failed = [e for e in run.log_lines() if e["level"] == "error"]
    assert [(e["reason"], "could not publish the snapshot" in e["msg"]) for e in failed] == [(publish.REASON, True)]
    problems = run.agent.status.to_json()["problems"]
    assert [(p["step"], p["reason"]) for p in problems] == [("publishing the snapshot", publish.REASON)]
    subprocess.run(["git", "init", "--quiet", "--bare", str(gone)], check=True)
    run.run_until(lambda: len(history(gone)) == 1, INTERVAL * 2, "the snapshot once the remote is back")
    assert run.agent.status.to_json()["problems"] == []
    assert history(remote) == []


# -- the setting -----------------------------------------------------------------------------


def test_the_config_turns_publishing_on_with_defaults(tmp_path: Path) -> None:
    """`snapshot: {git: {}}` commits to portctl-snapshot:snapshot.json of the followed repository as this host's agent;
    without it nothing is published, and --snapshot FILE keeps the file's git setting."""
    plain = write(tmp_path, "repo: https://git.example/homelab.git\nsnapshot:\n  path: r.json\n", "plain.yaml")
    assert build(plain, {}).snapshot_git is None
    path = write(tmp_path, "repo: https://git.example/homelab.git\nsnapshot:\n  git: {}\n", "a.yaml")
    config = build(path, {})
    assert config.snapshot is None
    assert config.snapshot_git == publish.GitTarget(
        "portctl-snapshot", "snapshot.json", None, publish.default_author(), 12 * 3600
    )
    assert publish.remote_url(config.snapshot_git, config.repo) == "https://git.example/homelab.git"
    flagged = build(path, {"snapshot": "/tmp/r.json"})
    assert (flagged.snapshot, flagged.snapshot_git) == ("/tmp/r.json", config.snapshot_git)


def test_the_git_settings_are_read(tmp_path: Path) -> None:
    """Every key of snapshot.git is taken as written."""
    text = (
        "manifest: m.yaml\nsnapshot:\n  git:\n    branch: lab/router\n    path: snaps/router.json\n"
        "    remote: git@git.example:me/homelab.git\n    author: Router Bot <bot@lab.test>\n    refresh: 6h\n"
    )
    config = build(write(tmp_path, text, "a.yaml"), {})
    assert config.snapshot_git == publish.GitTarget(
        "lab/router", "snaps/router.json", "git@git.example:me/homelab.git", "Router Bot <bot@lab.test>", 6 * 3600
    )
    assert config.snapshot_git.identity == ("Router Bot", "bot@lab.test")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("repo: r\nsnapshot:\n  git:\n    brnch: x\n", "a.yaml:4:5: snapshot: git: brnch: unknown setting 'brnch'"),
        ("repo: r\nsnapshot:\n  git:\n    branch: a..b\n", "a.yaml:4:13: snapshot: git: branch: 'a..b' is not"),
        ("repo: r\nsnapshot:\n  git:\n    path: ../x.json\n", "a.yaml:4:11: snapshot: git: path: '../x.json'"),
        ("repo: r\nsnapshot:\n  git:\n    author: bot\n", "a.yaml:4:13: snapshot: git: author: 'bot': expected"),
        ("repo: r\nsnapshot:\n  git:\n    refresh: 10s\n", "a.yaml:4:14: snapshot: git: refresh: must be at"),
        ("repo: r\nsnapshot:\n  git: yes\n", "a.yaml:3:8: snapshot: git: expected a mapping"),
        ("repo: r\nsnapshot: {}\n", "a.yaml:2:11: snapshot: expected {path: FILE}"),
        ("manifest: m.yaml\nsnapshot:\n  git: {}\n", "a.yaml:3:3: snapshot: git: give remote:"),
        ("repo: r\nsnapshot-git: {}\n", "a.yaml:2:1: unknown setting 'snapshot-git'"),
    ],
)
def test_a_bad_git_setting_is_one_message(tmp_path: Path, text: str, message: str) -> None:
    """A snapshot.git setting that cannot be used is refused naming the file, line and column."""
    with pytest.raises(ConfigError) as refused:
        build(write(tmp_path, text, "a.yaml"), {})
    assert message in str(refused.value)


# -- credentials in the remote's URL ---------------------------------------------------------

TOKEN_URL = "https://agent:s3cret-token@git.example/homelab.git?private_token=q-token"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (TOKEN_URL, "https://***@git.example/homelab.git?***"),
        ("https://ghp_0123456789@github.com/me/homelab.git", "https://***@github.com/me/homelab.git"),
        ("ssh://git:pw@git.example/homelab.git", "ssh://***@git.example/homelab.git"),
        ("ssh://git@git.example/homelab.git", "ssh://git@git.example/homelab.git"),
        ("git@git.example:me/homelab.git", "git@git.example:me/homelab.git"),
        ("file:///srv/git/homelab.git", "file:///srv/git/homelab.git"),
    ],
)
def test_describe_never_shows_the_remotes_credentials(tmp_path: Path, url: str, shown: str) -> None:
    """Where the snapshot goes is shown with the URL's userinfo (but an ssh login name) and query replaced by ***."""
    publisher = publish.GitPublisher(publish.GitTarget(author=AGENT), url, str(tmp_path / "p.git"))
    assert publisher.describe() == f"{shown} {BRANCH}:snapshot.json"


def test_a_failed_push_never_shows_the_remotes_credentials(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When git's complaint echoes the remote's URL, token and all, the log and the status show it redacted."""
    # A git that answers ls-remote as an unreachable host does, echoing the URL it was given (as git
    # versions before 2.40 did); every other command is the real git. No packet leaves the machine.
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  if [ "$a" = ls-remote ]; then\n'
        '    for u in "$@"; do case "$u" in https://*) url="$u";; esac; done\n'
        "    echo \"fatal: unable to access '$url/': Could not resolve host: git.example\" >&2\n"
        "    exit 128\n"
        "  fi\n"
        "done\n"
        f'exec {real} "$@"\n'
    )
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = write(tmp_path, manifest(("web", 8080, 80)), "m.yaml")
    target = publish.GitTarget(author=AGENT, remote=TOKEN_URL)
    run = Driven(path, emulator, snapshot_git=target, interval=INTERVAL, watch=5, wall_too=True, settle=0)
    first_pass(run)
    problems = run.agent.status.to_json()["problems"]
    assert [p["reason"] for p in problems] == [publish.REASON]
    said = json.dumps(problems) + json.dumps(run.log_lines())
    assert "Could not resolve host" in said and "https://***@git.example/homelab.git?***" in said
    assert "s3cret-token" not in said and "q-token" not in said


# -- never the followed branch ---------------------------------------------------------------

REPO = "repo: https://git.example/homelab.git\n"


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        (REPO + "snapshot:\n  git:\n    branch: main\n", {}, "a.yaml:4:13: snapshot: git: branch: 'main' is the"),
        (
            REPO + "ref: refs/heads/lab\nsnapshot:\n  git:\n    branch: lab\n",
            {},
            "a.yaml:5:13: snapshot: git: branch: 'lab' is the branch the agent follows (ref 'refs/heads/lab', /",
        ),
        (REPO + "snapshot:\n  git:\n    branch: lab\n", {"ref": "lab"}, "(ref 'lab', the command line)"),
        (REPO + "ref: portctl-snapshot\nsnapshot:\n  git: {}\n", {}, "a.yaml:4:3: snapshot: git: branch: 'portctl"),
        (
            REPO + "snapshot:\n  git:\n    branch: main\n    remote: https://bot:tok@GIT.example/homelab/\n",
            {},
            "a.yaml:4:13: snapshot: git: branch: 'main' is the branch the agent follows (ref 'main', the default)",
        ),
    ],
)
def test_the_followed_branch_is_refused_as_the_snapshot_branch(
    tmp_path: Path, text: str, flags: dict[str, Any], message: str
) -> None:
    """A snapshot branch that is the followed ref of the followed repository is one error naming where it was set."""
    with pytest.raises(ConfigError) as refused:
        build(write(tmp_path, text, "a.yaml"), flags)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert "tok" not in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        REPO + "snapshot:\n  git:\n    branch: main\n    remote: https://git.example/elsewhere.git\n",
        REPO + "ref: lab\nsnapshot:\n  git:\n    branch: main\n",
        "manifest: m.yaml\nsnapshot:\n  git:\n    branch: main\n    remote: https://git.example/homelab.git\n",
    ],
)
def test_a_branch_of_another_repository_or_ref_is_taken(tmp_path: Path, text: str) -> None:
    """The same branch name in another repository, or another branch of the followed one, is a fine snapshot branch."""
    assert build(write(tmp_path, text, "a.yaml"), {}).snapshot_git is not None


def test_a_local_repository_and_its_file_url_are_one_repository(tmp_path: Path) -> None:
    """A local path and its file:// URL (with a trailing slash) name the same repository."""
    repo = tmp_path / "homelab.git"
    repo.mkdir()
    assert publish.same_repository(str(repo), f"file://{repo}/")
    assert not publish.same_repository(str(repo), str(tmp_path / "other.git"))
    text = f"repo: {repo}\nsnapshot:\n  git:\n    branch: main\n    remote: file://{repo}/\n"
    with pytest.raises(ConfigError, match="is the branch the agent follows"):
        build(write(tmp_path, text, "a.yaml"), {})
