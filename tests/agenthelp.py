"""Helpers for the agent's tests: a local git repository to commit manifests to, and an agent
running in-process (its loop on a thread, its HTTP listener on a free loopback port)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import urllib.request
from dataclasses import replace
from typing import Any

from reconciler.agent.config import AgentConfig
from reconciler.agent.control import ControlServer
from reconciler.agent.controller import Agent
from reconciler.agent.logs import JsonLog
from reconciler.emulator import EmulatorServer
from tests.routerlab import wait_for

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


def manifest(*mappings: tuple[str, int, int], lease: str = "permanent", client: str = "127.0.0.1") -> str:
    """A manifest of TCP mappings (name, external port, internal port) for `client`."""
    lines = ["apiVersion: portctl/v1", "owner: homelab", f"defaults:\n  lease: {lease}", "mappings:"]
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


class AgentRun:
    """An agent on a thread with its listener; `stop()` is what SIGTERM does."""

    def __init__(self, config: AgentConfig) -> None:
        self.logs = io.StringIO()
        self.agent = Agent(replace(config, listen="127.0.0.1:0"), log=JsonLog(self.logs))
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
        try:
            with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])  # type: ignore[no-any-return]

    def condition(self, kind: str = "Ready") -> dict[str, Any]:
        return next((c for c in self.status()["conditions"] if c["type"] == kind), {})

    def wait_condition(self, status: str, reason: str, timeout: float = 20) -> None:
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
    """An agent whose passes the test runs one at a time (no loop thread), on a clock the test moves."""

    def __init__(self, path: str, router: EmulatorServer, clock: Clock | None = None, **settings: Any) -> None:
        self.logs = io.StringIO()
        self.clock = clock or Clock()
        config = AgentConfig(manifest=path, router=router.url, events=False, timeout=5.0, **settings)
        self.agent = Agent(config, log=JsonLog(self.logs), clock=self.clock)

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
