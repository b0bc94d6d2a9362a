"""The agent's settings: command-line flags over an optional YAML config file over defaults.

The config file uses the flags' long names as keys (`interval: 5m`, `verify-signatures: true`), so
one vocabulary serves the command line, the file, the systemd unit and the docs. The file is read
like a manifest (yamldoc: within bounds, YAML 1.2 scalars, so `yes` is text and not true), and a
bad value is named by file, line and column.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..durations import parse_duration
from ..errors import PortctlError, Problem
from ..numbers import NotANumber, ascii_int, seconds
from . import publish

DEFAULT_LISTEN = "127.0.0.1:9477"
WHAT = "agent config"  # how messages name the file


class ConfigError(PortctlError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    repo: str | None = None
    ref: str = "main"
    # The manifest's path in the repository, or several (a list), or a directory of them.
    path: str | tuple[str, ...] = "mappings.yaml"
    manifest: str | tuple[str, ...] | None = None  # follow local files (or a directory) instead of a repository
    settle: int = 2  # seconds a local file must stay unchanged before it is used (it may be mid-write)
    interval: int = 60  # seconds between reconciles (before jitter)
    jitter: float = 0.1  # each wait is the interval +/- this share, so a fleet does not pulse
    max_backoff: int = 300  # the longest wait after failures (capped at the interval)
    watch: int = 15  # seconds between the cheap checks of the router's WAN address and presence
    listen: str = DEFAULT_LISTEN
    router: str | None = None
    timeout: float = 5.0
    verify_signatures: bool = False
    allowed_signers: str | None = None
    release_on_exit: bool = False
    max_deletions: int | None = None  # refuse a pass that would delete more mappings than this
    allow_empty: bool = False  # let an empty manifest prune everything the owner holds
    events: bool = True  # subscribe to the router's GENA events where offered
    events_port: int = 0
    webhook: str | None = None
    workdir: str | None = None  # where the repository is checked out
    snapshot: str | None = None  # where to write the router's snapshot after each pass (`snapshot: {path: FILE}`)
    snapshot_git: publish.GitTarget | None = None  # the branch to commit it to (`snapshot: {git: {...}}`)

    @property
    def manifests(self) -> tuple[str, ...]:
        """What the agent follows, as given: files and directories, local or in the repository."""
        given = self.manifest if self.manifest else self.path
        return (given,) if isinstance(given, str) else given

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_address(self.listen)

    def checkout_dir(self) -> str:
        if self.workdir:
            return self.workdir
        # systemd's StateDirectory=, then the XDG state directory.
        base = os.environ.get("STATE_DIRECTORY") or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "portctl"
        )
        return os.path.join(base, "checkout")


_DURATIONS = {"interval", "max_backoff", "watch", "settle"}
_BOOLS = {"verify_signatures", "release_on_exit", "allow_empty", "events"}
# Integers are read as the text they would be on the command line: ASCII digits only.
_NUMBERS: dict[str, Callable[[Any], float]] = {
    "timeout": seconds,
    "jitter": float,
    "events_port": lambda value: ascii_int(str(value), max_digits=5),
    "max_deletions": lambda value: ascii_int(str(value), max_digits=9),
}


def build(file: str | None, flags: dict[str, Any]) -> AgentConfig:
    """Merge the config file (if any) and the flags that were given (None means not given).

    A bad value is one ConfigError naming where it was given: the file, line and column of a
    setting from the file, "the command line" for a flag.
    """
    settings = _Settings.read(file) if file else _Settings("the command line")
    values = dict(settings.values)
    given = {k: v for k, v in flags.items() if v is not None}
    values.update(given)

    def where(key: str) -> str:
        return "the command line" if key in given else settings.where(key)

    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = _convert(key, value, where(key))
    if "snapshot" in settings.values:
        # --snapshot FILE replaces the file's path, not its git setting.
        out["snapshot_git"] = _snapshot_git(settings.values["snapshot"], settings)
    config = AgentConfig(**out)
    if bool(config.repo) == bool(config.manifest):
        raise ConfigError("give the manifest's source: --repo URL_OR_PATH, or --manifest FILE (not both)")
    if config.interval < 1:
        raise ConfigError(f"{where('interval')}: interval must be at least 1s")
    if not 0 <= config.jitter < 1:
        raise ConfigError(f"{where('jitter')}: jitter must be a share between 0 and 1, such as 0.1")
    if not 0 <= config.events_port <= 65535:
        raise ConfigError(f"{where('events_port')}: events-port must be a port (0 to 65535)")
    if config.max_deletions is not None and config.max_deletions < 0:
        raise ConfigError(f"{where('max_deletions')}: max-deletions must be 0 or more")
    if config.snapshot_git and not (config.snapshot_git.remote or config.repo):
        raise ConfigError(
            f"{settings.where('snapshot')}: snapshot: git: give remote: the repository to commit the snapshot to "
            "(the agent follows a local file, so there is no repository to default to)"
        )
    if config.snapshot_git and config.repo:
        ref_at = where("ref") if "ref" in values else "the default"
        _check_snapshot_branch(config.snapshot_git, config.repo, config.ref, settings, ref_at)
    if config.allowed_signers and not config.verify_signatures:
        raise ConfigError(f"{where('allowed_signers')}: allowed-signers is only used with verify-signatures")
    try:
        split_address(config.listen)
    except ConfigError as exc:
        raise ConfigError(f"{where('listen')}: listen: {exc}") from exc
    return config


def _check_snapshot_branch(target: publish.GitTarget, repo: str, ref: str, settings: _Settings, ref_at: str) -> None:
    """The snapshot's commits must never land on the branch the agent follows: they would replace
    its files with the snapshot's commits, unsigned ones that --verify-signatures then stalls on."""
    followed = ref.removeprefix("refs/heads/")
    if target.branch != followed or not (target.remote is None or publish.same_repository(target.remote, repo)):
        return
    git = settings.values["snapshot"].get("git")
    named = isinstance(git, dict) and "branch" in git
    at = ("git", "branch") if named else ("git",)
    where = settings.where_in("snapshot", *at, on_key=not named)
    raise ConfigError(
        f"{where}: snapshot: git: branch: {target.branch!r} is the branch the agent follows (ref {ref!r}, "
        f"{ref_at}) in the same repository: its snapshot commits would land on the manifest's branch. "
        f"Give another branch, such as {publish.DEFAULT_BRANCH}"
    )


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = ascii_int(port, max_digits=5)
    except NotANumber:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise ConfigError(f"{text!r} is not HOST:PORT (for example {DEFAULT_LISTEN})")
    return host.strip("[]"), number


@dataclass
class _Settings:
    """The settings a config file gives, and where each stands in it."""

    file: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, tuple[int, int]] = field(default_factory=dict)  # setting -> (line, column) of its value
    keys: dict[str, str] = field(default_factory=dict)  # setting -> its key as written (max-deletions)
    doc: Any = None  # the yamldoc.Document read, for where a nested setting stands

    def where(self, key: str) -> str:
        line, column = self.lines.get(key, (0, 0))
        return f"{self.file}:{line}:{column}" if line else self.file

    def where_in(self, key: str, *inner: str, on_key: bool = False) -> str:
        """Where a setting nested in `key`'s mapping stands (`snapshot`, `git`, `branch`); `on_key`: its key."""
        if self.doc is None or key not in self.keys:
            return self.where(key)
        line, column = self.doc.where((self.keys[key], *inner), key=on_key)
        return f"{self.file}:{line}:{column}" if line else self.file

    @classmethod
    def read(cls, file: str) -> _Settings:
        """The file's settings, read within the manifest's bounds and YAML 1.2's scalars (yamldoc)."""
        from .. import yamldoc

        text = yamldoc.read(file, WHAT)
        if isinstance(text, Problem):
            raise ConfigError(str(text))
        doc = yamldoc.Document(text, file, what=WHAT, empty_ok=True)
        if doc.problems:
            # The first problem in the file: one clear message, the way a flag's is.
            raise ConfigError(str(min(doc.problems, key=lambda p: (p.line, p.column))))
        if doc.data is None:
            return cls(file)
        if not isinstance(doc.data, dict):
            raise ConfigError(f"{file}: expected a mapping of settings such as 'repo: ...'")
        known = {f.name for f in fields(AgentConfig)} - {"snapshot_git"}  # that one is snapshot: {git: ...}
        settings = cls(file, doc=doc)
        for key, value in doc.data.items():
            name = key.replace("-", "_")
            if name not in known:
                line, column = doc.where((key,), key=True)
                where = f"{file}:{line}:{column}" if line else file
                raise ConfigError(f"{where}: unknown setting {key!r}; the settings are the agent's long flag names")
            if name in settings.values:  # max-deletions and max_deletions: which one meant it?
                line, column = doc.where((key,), key=True)
                where = f"{file}:{line}:{column}" if line else file
                raise ConfigError(f"{where}: {key!r} sets {name.replace('_', '-')} a second time")
            settings.values[name] = value
            settings.lines[name] = doc.where((key,))
            settings.keys[name] = key
        return settings


def _snapshot(value: Any, where: str) -> str | None:
    """`snapshot: {path: FILE, git: {...}}` in the file (either or both), `--snapshot FILE` on the command line."""
    expected = (
        f"{where}: snapshot: expected {{path: FILE}}, the file to write the router's snapshot to, "
        "and/or {git: {branch: ...}}, the branch to commit it to"
    )
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"path", "git"})
        if unknown:
            raise ConfigError(f"{where}: snapshot: unknown setting {unknown[0]!r}; snapshot takes path and git")
        if "path" not in value:
            if "git" not in value:
                raise ConfigError(expected)
            return None
        value = value["path"]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(expected)
    return value


def _snapshot_git(value: Any, settings: _Settings) -> publish.GitTarget | None:
    """The config file's `snapshot: {git: {...}}`: committing the snapshot to a branch, off unless given."""
    if not isinstance(value, dict) or "git" not in value:
        return None
    try:
        return publish.parse(value["git"])
    except publish.BadSetting as exc:
        at = ("git", exc.at) if exc.at else ("git",)
        name = f"git: {exc.at}" if exc.at else "git"
        where = settings.where_in("snapshot", *at, on_key=exc.key)
        raise ConfigError(f"{where}: snapshot: {name}: {exc}") from None


def _files(key: str, value: Any, where: str) -> str | tuple[str, ...]:
    """`manifest:`/`path:` name a file or a directory, or list several (a repeated flag is a list);
    a list of one is that one, so a single file reads exactly as it always did."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"{where}: {key}: expected a file or a directory, or a list of them")
    if len(set(items)) != len(items):
        twice = next(i for i in items if items.count(i) > 1)
        raise ConfigError(f"{where}: {key}: {twice} is given twice")
    return items[0] if len(items) == 1 else tuple(items)


def _convert(key: str, value: Any, where: str) -> Any:
    if key == "snapshot":
        return _snapshot(value, where)
    if key in ("manifest", "path") and value is not None:
        return _files(key, value, where)
    try:
        if key in _DURATIONS:
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a duration")
            return parse_duration(value)
        if key in _BOOLS:
            if not isinstance(value, bool):
                raise ValueError(f"{value!r} is not true or false")
            return value
        if key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"{value!r} is not a number")
            return _NUMBERS[key](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key.replace('_', '-')}: {exc}") from exc
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: {key.replace('_', '-')}: expected text, got {value!r}")
    return value
