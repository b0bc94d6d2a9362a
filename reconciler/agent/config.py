"""The agent's settings: command-line flags over an optional YAML config file over defaults.

The config file uses the flags' long names as keys (`interval: 5m`, `verify-signatures: true`), so
one vocabulary serves the command line, the file, the systemd unit and the docs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..durations import parse_duration
from ..errors import PortctlError
from ..numbers import NotANumber, ascii_int, seconds

DEFAULT_LISTEN = "127.0.0.1:9477"


class ConfigError(PortctlError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    repo: str | None = None
    ref: str = "main"
    path: str = "mappings.yaml"
    manifest: str | None = None  # follow a local file instead of a repository
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
    """Merge the config file (if any) and the flags that were given (None means not given)."""
    values: dict[str, Any] = {}
    if file:
        values.update(_read(file))
    values.update({k: v for k, v in flags.items() if v is not None})
    where = file or "the command line"
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = _convert(key, value, where)
    config = AgentConfig(**out)
    if bool(config.repo) == bool(config.manifest):
        raise ConfigError("give the manifest's source: --repo URL_OR_PATH, or --manifest FILE (not both)")
    if config.interval < 1:
        raise ConfigError(f"{where}: interval must be at least 1s")
    if not 0 <= config.jitter < 1:
        raise ConfigError(f"{where}: jitter must be a share between 0 and 1, such as 0.1")
    if not 0 <= config.events_port <= 65535:
        raise ConfigError(f"{where}: events-port must be a port (0 to 65535)")
    if config.max_deletions is not None and config.max_deletions < 0:
        raise ConfigError(f"{where}: max-deletions must be 0 or more")
    if config.allowed_signers and not config.verify_signatures:
        raise ConfigError(f"{where}: allowed-signers is only used with verify-signatures")
    try:
        split_address(config.listen)
    except ConfigError as exc:
        raise ConfigError(f"{where}: listen: {exc}") from exc
    return config


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = ascii_int(port, max_digits=5)
    except NotANumber:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise ConfigError(f"{text!r} is not HOST:PORT (for example {DEFAULT_LISTEN})")
    return host.strip("[]"), number


def _read(file: str) -> dict[str, Any]:
    import yaml

    try:
        with open(file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}{at}: not valid YAML") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of settings such as 'repo: ...'")
    known = {f.name for f in fields(AgentConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{file}: unknown setting {key!r}; the settings are the agent's long flag names")
        out[name] = value
    return out


def _convert(key: str, value: Any, where: str) -> Any:
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
