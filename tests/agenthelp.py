"""Helpers for the agent's tests: a local git repository to commit manifests to, an agent driven one
turn at a time on a virtual clock it shares with the emulated router, and an agent running
in-process (its loop on a thread, its HTTP listener on a free loopback port) for what needs the
loop's thread: the control API and signals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from reconciler.agent.config import AgentConfig
from reconciler.agent.control import ControlServer
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.backends.base import Backend
from reconciler.emulator import EmulatorServer
from tests.routerlab import wait_for

# The emulator runs in this process on a machine that may be busy: give it time to answer.
ROUTER_TIMEOUT = 30.0
# A condition a thread must reach (a request served, an event delivered) on a busy machine.
DEADLINE = 60.0

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Homelab Admin",
    "GIT_AUTHOR_EMAIL": "admin@homelab.test",
    "GIT_COMMITTER_NAME": "Homelab Admin",
    "GIT_COMMITTER_EMAIL": "admin@homelab.test",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitRepo:
    """A homelab repository on disk; each commit() is what a push to main would be."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(
            ["git", "-C", self.path, *args], capture_output=True, text=True, check=True, env=env
        ).stdout

    def commit(
        self, text: str, message: str = "update mappings", *, sign_with: str = "", name: str = "mappings.yaml"
    ) -> str:
        """Commit `text` as the manifest; returns the commit id."""
        with open(os.path.join(self.path, name), "w") as f:
            f.write(text)
        self.git("add", name)
        signing = (
            ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign_with}", "commit", "-S"] if sign_with else ["commit"]
        )
        self.git(*signing, "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()


def manifest(
    *mappings: tuple[str, int, int], lease: str = "permanent", client: str = "127.0.0.1", owner: str = "homelab"
) -> str:
    """A manifest of TCP mappings (name, external port, internal port) for `client`."""
    lines = ["apiVersion: portctl/v1", f"owner: {owner}", f"defaults:\n  lease: {lease}", "mappings:"]
    for name, external, internal in mappings:
        lines += [
            f"  - name: {name}",
            f"    external_port: {external}",
            f"    internal_port: {internal}",
            f"    internal_client: {client}",
        ]
    if not mappings:
        lines[-1] = "mappings: []"
    return "\n".join(lines) + "\n"


def get(listen: str, path: str) -> tuple[int, bytes]:
    """GET `path` from an agent's listener: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(f"http://{listen}{path}", timeout=DEADLINE) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class AgentRun:
    """An agent on a thread with its listener; `stop()` is what SIGTERM does. Give it a `Clock` that
    the test never moves and nothing becomes due by itself: passes run when asked for."""

    def __init__(self, config: AgentConfig, clock: Clock | None = None) -> None:
        self.logs = io.StringIO()
        self.agent = Agent(
            replace(config, listen="127.0.0.1:0"), log=JsonLog(self.logs), **({"clock": clock} if clock else {})
        )
        self.server = ControlServer(self.agent, "127.0.0.1", 0).start()
        self.thread = threading.Thread(target=self.agent.run, name="agent-under-test", daemon=True)

    def __enter__(self) -> AgentRun:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent did not stop"
        self.server.stop()

    @property
    def listen(self) -> str:
        return self.server.address

    def get(self, path: str) -> tuple[int, bytes]:
        return get(self.listen, path)

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])  # type: ignore[no-any-return]

    def condition(self, kind: str = "Ready") -> dict[str, Any]:
        return next((c for c in self.status()["conditions"] if c["type"] == kind), {})

    def wait_condition(self, status: str, reason: str, timeout: float = DEADLINE) -> None:
        wait_for(
            lambda: (self.condition().get("status"), self.condition().get("reason")) == (status, reason),
            timeout,
            f"Ready={status} ({reason}); last: {self.condition()}",
        )

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines()]


class Clock:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Driven:
    """An agent whose loop the test turns (no thread), on a clock the test moves. The emulated router
        counts uptime and leases on the same clock, so a busy machine changes nothing a test sees. With a
        router URL instead of an emulator, `connect` makes the backend (a fake router on the same clock). With
    `wall_too` the agent's wall clock is that clock as well."""

    def __init__(
        self,
        path: str | None,
        router: EmulatorServer | str,
        clock: Clock | None = None,
        *,
        share_clock: bool = True,
        connect: Callable[..., Backend] | None = None,
        wall_too: bool = False,
        **settings: Any,
    ) -> None:
        self.logs = io.StringIO()
        self.clock = clock or Clock()
        if isinstance(router, EmulatorServer) and share_clock:
            router.router.use_clock(self.clock)
        settings = {"events": False, "timeout": ROUTER_TIMEOUT, **settings}
        source: dict[str, Any] = {"manifest": path} if path else {}
        url = router.url if isinstance(router, EmulatorServer) else router  # a URL: `connect` makes its backend
        config = AgentConfig(router=url, **source, **settings)
        extra: dict[str, Any] = {"connect": connect} if connect else {}
        if wall_too:  # the wall clock is the virtual one too: what is stamped on it (pinhole expiries) moves with it
            extra["wall"] = self.clock
        self.agent = Agent(config, log=JsonLog(self.logs), clock=self.clock, **extra)

    def run_until(self, done: Callable[[], bool], within: float, what: str = "the condition") -> float:
        """Turn the loop, moving the clock to each wake-up, until `done()`; fails if that takes more
        than `within` seconds on the clock. Returns the seconds it took."""
        start = self.clock()
        for _ in range(10_000):
            if done():
                return self.clock() - start
            wake = self.agent.step()
            if wake > start + within and not done():
                raise AssertionError(
                    f"{what} did not happen within {within} s on the clock (next wake-up {wake - start:g} s)"
                )
            self.clock.now = max(self.clock.now, wake)
        raise AssertionError(f"{what}: the loop kept turning without the clock moving")

    def run_for(self, seconds: float) -> None:
        """Turn the loop through `seconds` on the clock, doing whatever falls due."""
        end = self.clock() + seconds
        for _ in range(10_000):
            wake = self.agent.step()
            if wake > end:
                self.clock.now = end
                return
            self.clock.now = max(self.clock.now, wake)
        raise AssertionError("the loop kept turning without the clock moving")

    def passes(self) -> int:
        """How many passes have run (the reconcile counter, whatever their result)."""
        return int(
            sum(self.metric(f'portctl_reconcile_total{{result="{r}"}}') for r in ("changed", "unchanged", "failed"))
        )

    def condition(self, kind: str) -> tuple[str, str]:
        c = self.agent.status.condition(kind)
        return (c.status, c.reason) if c else ("", "")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines()]

    def errors(self) -> list[str]:
        return [e["msg"] for e in self.log_lines() if e["level"] == "error"]

    def metric(self, line: str) -> float:
        for text in self.agent.metrics.exposition().decode().splitlines():
            if text.startswith(line + " "):
                return float(text.split()[-1])
        return 0.0
