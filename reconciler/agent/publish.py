"""The agent commits the router's snapshot to a branch of a repository, for a hosted CI runner to plan against.

`snapshot: {git: {...}}` in the agent's config turns it on (it is off by default: the snapshot lists
every mapping on the router, other people's included, with their LAN addresses and descriptions).
After a pass, when the snapshot says something the branch does not, the agent makes one commit on
the branch with its own identity and pushes it. It never touches the branch it follows or its
checkout: commits are made with git's plumbing (hash-object, a private index, write-tree,
commit-tree) in a bare repository of its own beside the checkout, and pushed by commit id to the
branch. Other files on the branch are kept.

"Says something the branch does not" ignores when the snapshot was read, the seconds left on finite
leases and when a router's need was last seen: these move at every pass, and committing them would
make a commit a pass. An unchanged snapshot is committed again once the branch's copy is `refresh`
old (12h by default), so a runner's `--max-snapshot-age 24h` holds while the agent is running and the
router is quiet. Every git command has a timeout; a failure (the remote unreachable, a push
rejected) raises PublishFailed, which the agent logs once per cause and retries at the next pass.

The remote is shown (in the log, the status, a webhook's message) only through `redact`: a URL may
carry a token as its user or password (https://x-access-token:TOKEN@host/...) or in its query.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..durations import format_duration, parse_duration
from ..errors import PortctlError
from ..snapshot import iso

GIT_TIMEOUT = 60.0  # seconds for one git command; the pass waits for it, so a hung remote must not stall it
DEFAULT_BRANCH = "portctl-snapshot"
DEFAULT_PATH = "snapshot.json"  # examples/github-workflow.yml checks the branch out into .portctl-snapshot/
DEFAULT_REFRESH = 12 * 3600
REASON = "SnapshotPublishFailed"
_REF = "refs/remotes/published/"  # the branch's tip as last fetched or pushed, in the private repository

_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_AUTHOR = re.compile(r"([^<>\n]*[^<>\s])\s*<([^<>\s]+)>")
# A URL's userinfo or query as git may echo it in a complaint: scheme://userinfo@ and ?query.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\"]*")
REDACTED = "***"
_SCP = re.compile(r"[^/:@]+@[^/:]+:.*")  # git@host:owner/repo


class BadSetting(ValueError):
    """A `snapshot.git` setting that cannot be used; `at` is its key under git (empty for the block),
    `key` says the key itself is wrong (not its value)."""

    def __init__(self, at: str, message: str, *, key: bool = False) -> None:
        super().__init__(message)
        self.at = at
        self.key = key


class PublishFailed(PortctlError):
    """The snapshot could not be committed or pushed; the next pass tries again."""


def default_author() -> str:
    return f"portctl agent <portctl@{socket.gethostname() or 'localhost'}>"


@dataclass(frozen=True)
class GitTarget:
    """Where the snapshot is committed: `path` on `branch` of `remote` (None: the repository the agent follows)."""

    branch: str = DEFAULT_BRANCH
    path: str = DEFAULT_PATH
    remote: str | None = None
    author: str = field(default_factory=default_author)
    refresh: int = DEFAULT_REFRESH

    @property
    def identity(self) -> tuple[str, str]:
        match = _AUTHOR.fullmatch(self.author)
        assert match is not None, self.author  # parse() checked it
        return match.group(1), match.group(2)


def parse(value: object) -> GitTarget:
    """`snapshot: {git: {branch, path, remote, author, refresh}}`, each optional; raises BadSetting."""
    if not isinstance(value, dict):
        raise BadSetting("", "expected a mapping such as {branch: portctl-snapshot} ({} for the defaults)")
    known = ("branch", "path", "remote", "author", "refresh")
    for key in value:
        if key not in known:
            raise BadSetting(str(key), f"unknown setting {key!r}; git takes {', '.join(known)}", key=True)
    texts: dict[str, str] = {}
    for key in ("branch", "path", "remote", "author"):
        if key in value:
            text = value[key]
            if not isinstance(text, str) or not text.strip() or "\n" in text or "\0" in text:
                raise BadSetting(key, f"expected text, got {text!r}")
            texts[key] = text.strip()
    branch = texts.get("branch", DEFAULT_BRANCH)
    if not _BRANCH.fullmatch(branch) or ".." in branch or "//" in branch or branch.endswith((".lock", "/", ".")):
        raise BadSetting("branch", f"{branch!r} is not a branch name git takes")
    path = texts.get("path", DEFAULT_PATH)
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise BadSetting("path", f"{path!r}: expected a file's path inside the branch, such as {DEFAULT_PATH}")
    author = texts.get("author") or default_author()
    if not _AUTHOR.fullmatch(author):
        raise BadSetting("author", f"{author!r}: expected 'Name <email>', such as {default_author()!r}")
    refresh = DEFAULT_REFRESH
    if "refresh" in value:
        given = value["refresh"]
        try:
            if isinstance(given, bool) or not isinstance(given, int | str):
                raise ValueError(f"{given!r} is not a duration")
            refresh = parse_duration(given)
        except ValueError as exc:
            raise BadSetting("refresh", str(exc)) from None
        if refresh < 60:
            raise BadSetting("refresh", "must be at least 1m")
    return GitTarget(branch, path, texts.get("remote"), author, refresh)


def remote_url(target: GitTarget, followed: str | None) -> str | None:
    """The URL pushed to: the setting, else the followed repository; a local directory as file://, as
    GitSource fetches it. None when there is neither."""
    url = target.remote or followed
    if url is None:
        return None
    return f"file://{os.path.abspath(url)}" if os.path.isdir(url) else url


def same_repository(a: str, b: str) -> bool:
    """Do the URLs (or paths) `a` and `b` name one repository? Credentials, case of the scheme and
    host, a trailing slash or .git and file:// against a plain path do not make two."""
    return _identity(a) == _identity(b)


def _identity(url: str) -> str:
    text = url.strip()
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    if "://" not in text and not _SCP.fullmatch(text):
        text = os.path.realpath(os.path.abspath(text))
    else:
        scheme, sep, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        text = f"{scheme.lower()}{sep}{host.rpartition('@')[2].lower()}{slash}{path.partition('?')[0]}"
    return text.rstrip("/").removesuffix(".git").rstrip("/")


def redact(url: str) -> str:
    """`url` fit to be shown: its userinfo and query (where tokens ride) replaced by ***. Over ssh
    the user alone (git@host) is a login name, not a secret, and stays."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if not parts.scheme or "://" not in url:
        return url  # a path or scp-like user@host:path, which carries no password
    user, at, host = parts.netloc.rpartition("@")
    if at:
        name, colon, _ = user.partition(":")
        keep = parts.scheme.lower() in ("ssh", "git+ssh", "ssh+git") and not colon
        user = name if keep else REDACTED
    netloc = f"{user}@{host}" if at else host
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def scrub(text: str) -> str:
    """`text` (git's complaint, an OSError) with every URL's userinfo and query replaced by ***."""
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _QUERY.sub(lambda m: m.group(1) + "?" + REDACTED, text)


def content(doc: dict[str, Any]) -> str:
    """What a snapshot says, for comparison: without what moves at every pass though nothing changed."""
    said = {k: v for k, v in doc.items() if k != "read_at"}
    said["mappings"] = [
        {**m, "lease": "finite" if m.get("lease") else m.get("lease")} if isinstance(m, dict) else m
        for m in doc.get("mappings") or []
    ]
    boot = doc.get("boot")
    if isinstance(boot, dict):
        said["boot"] = {k: v for k, v in boot.items() if k not in ("uptime_seconds", "epoch_seconds")}
    learned = doc.get("learned")
    if isinstance(learned, dict) and isinstance(learned.get("quirks"), dict):
        quirks = {
            name: {k: v for k, v in lesson.items() if k != "seen"} if isinstance(lesson, dict) else lesson
            for name, lesson in learned["quirks"].items()
        }
        said["learned"] = {**learned, "quirks": quirks}
    return json.dumps(said, sort_keys=True)


def _read_at(doc: dict[str, Any]) -> float | None:
    read_at = doc.get("read_at")
    epoch = read_at.get("epoch") if isinstance(read_at, dict) else None
    return float(epoch) if isinstance(epoch, int | float) and not isinstance(epoch, bool) else None


@dataclass(frozen=True)
class _Published:
    content: str
    read_at: float


class GitPublisher:
    """Commits snapshots to `target.branch` of `url`, from a bare repository of its own at `gitdir`."""

    def __init__(self, target: GitTarget, url: str, gitdir: str, *, timeout: float = GIT_TIMEOUT) -> None:
        self.target = target
        self.url = url
        self.gitdir = gitdir
        self.timeout = timeout
        self._known: _Published | None = None  # what the branch holds, as last read or pushed

    def describe(self) -> str:
        """Where the snapshot goes, as logs and the status show it: never with the URL's credentials."""
        return f"{redact(self.url)} {self.target.branch}:{self.target.path}"

    def publish(self, doc: dict[str, Any], now: float) -> str | None:
        """Commit `doc` and push it when the branch says otherwise or is `refresh` old at `now` (wall
        clock); returns the new commit's id, None when there was nothing to push."""
        said = content(doc)
        if self._current(said, now):
            return None  # as last pushed or read: no need to ask the remote
        self._init()
        tip = self._remote_tip()
        if tip is not None:
            self._fetch(tip)
            self._known = self._read(tip)
            if self._current(said, now):
                return None
        commit = self._commit(doc, tip)
        self._git("push", "--quiet", "--no-verify", self.url, f"{commit}:refs/heads/{self.target.branch}", what="push")
        self._git("update-ref", _REF + self.target.branch, commit, what="record the pushed commit")
        read_at = _read_at(doc)
        self._known = _Published(said, now if read_at is None else read_at)
        return commit

    def _current(self, said: str, now: float) -> bool:
        known = self._known
        return known is not None and known.content == said and now - known.read_at < self.target.refresh

    def _init(self) -> None:
        if not os.path.isfile(os.path.join(self.gitdir, "HEAD")):
            os.makedirs(self.gitdir, exist_ok=True)
            self._git("init", "--quiet", "--bare", what="create its repository")

    def _remote_tip(self) -> str | None:
        listed = self._git("ls-remote", "--heads", self.url, f"refs/heads/{self.target.branch}", what="reach")
        for line in listed.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{self.target.branch}":
                return sha
        return None  # the first snapshot: the branch is made

    def _fetch(self, tip: str) -> None:
        have = self._git("rev-parse", "--verify", "--quiet", _REF + self.target.branch, what="read", check=False)
        if have.strip() == tip:
            return
        self._git(
            "fetch", "--quiet", "--depth=1", "--no-tags", self.url,
            f"+refs/heads/{self.target.branch}:{_REF}{self.target.branch}", what="fetch",
        )  # fmt: skip

    def _read(self, tip: str) -> _Published | None:
        """What the branch's copy says, or None when it has none portctl can read."""
        text = self._git("cat-file", "-p", f"{tip}:{self.target.path}", what="read", check=False)
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        read_at = _read_at(doc) if isinstance(doc, dict) else None
        if read_at is None:
            return None
        return _Published(content(doc), read_at)

    def _commit(self, doc: dict[str, Any], parent: str | None) -> str:
        """A commit of the parent's tree with the snapshot at `path`, by the agent's identity."""
        data = json.dumps(doc, indent=2) + "\n"
        blob = self._git("hash-object", "-w", "--stdin", what="store the snapshot", stdin=data).strip()
        fd, index = tempfile.mkstemp(prefix="index-", dir=self.gitdir)
        os.close(fd)
        os.unlink(index)  # git makes the index itself; it must not find an empty file there
        try:
            env = {"GIT_INDEX_FILE": index}
            if parent is not None:
                self._git("read-tree", parent, what="read the branch", env=env)
            self._git(
                "update-index", "--add", "--cacheinfo", f"100644,{blob},{self.target.path}", what="stage", env=env
            )
            tree = self._git("write-tree", what="write the tree", env=env).strip()
        finally:
            if os.path.exists(index):
                os.unlink(index)
        name, email = self.target.identity
        read_at = _read_at(doc)
        stamp = f"@{int(read_at)} +0000" if read_at is not None else ""
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            **({"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp} if stamp else {}),
        }
        parents = ["-p", parent] if parent is not None else []
        return self._git(
            "-c", "commit.gpgSign=false", "commit-tree", tree, *parents, "-m", _message(doc),
            what="commit", env=identity,
        ).strip()  # fmt: skip

    def _git(
        self, *args: str, what: str, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True
    ) -> str:
        environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
        try:
            done = subprocess.run(
                ["git", f"--git-dir={self.gitdir}", *args],
                capture_output=True,
                text=True,
                input=stdin,
                timeout=self.timeout,
                env=environment,
                check=False,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise PublishFailed("could not publish the snapshot: the git command is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise PublishFailed(
                f"could not publish the snapshot to {self.describe()}: git could not {what} "
                f"within {format_duration(int(self.timeout))}"
            ) from exc
        except OSError as exc:
            raise PublishFailed(f"could not publish the snapshot to {self.describe()}: {scrub(str(exc))}") from exc
        if done.returncode != 0 and check:
            raise PublishFailed(
                f"could not publish the snapshot to {self.describe()}: git could not {what}: {scrub(_detail(done))}"
            )
        return done.stdout if done.returncode == 0 else ""


def _detail(done: subprocess.CompletedProcess[str]) -> str:
    """The line of git's complaint that names the cause (its hints come after it)."""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:", "! [", "remote: error:")):
            return line
    return lines[-1] if lines else f"exit status {done.returncode}"


def _message(doc: dict[str, Any]) -> str:
    router = doc.get("router") if isinstance(doc.get("router"), dict) else {}
    rows = [m for m in doc.get("mappings") or [] if isinstance(m, dict)]
    foreign = sum(1 for m in rows if m.get("owner") == "foreign")
    read_at = _read_at(doc)
    when = iso(read_at) if read_at is not None else "an unknown time"
    name = (router or {}).get("friendly_name") or (router or {}).get("udn") or "the router"
    return (
        f"portctl snapshot of {name} at {when}\n\n"
        f"{len(rows)} mapping(s), {foreign} of them foreign. Written by the portctl agent for plans with\n"
        "--snapshot on hosts that cannot reach the router."
    )
