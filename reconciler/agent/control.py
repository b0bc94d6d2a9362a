"""The agent's HTTP listener (health, status, metrics, control) and the client the CLI uses to talk to it.

    GET  /healthz     200 while the loop is alive
    GET  /readyz      200 when the last reconcile converged the router within two intervals, else 503;
                      each followed manifest's readiness too
    GET  /status      the status document (conditions, revisions, inventory, last results)
    GET  /metrics     Prometheus exposition
    POST /reconcile   run a pass now and answer with its result (?wait=SECONDS, default 60)
    POST /suspend     stop reconciling until /resume
    POST /resume

The listener binds to loopback unless told otherwise. State-changing requests must carry the
header `X-Portctl-Control: 1`, which a web page cannot send to another origin without a CORS
preflight this server never grants; and on loopback, requests naming a non-loopback Host are
refused, so DNS rebinding cannot turn a browser into a remote control either.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import PortctlError
from ..httpserve import BackgroundServer

if TYPE_CHECKING:
    from .controller import Agent

CONTROL_HEADER = "X-Portctl-Control"
DEFAULT_WAIT = 60.0


class ControlServer:
    def __init__(self, agent: Agent, host: str, port: int) -> None:
        self.agent = agent
        self.loopback_only = _is_loopback(host)
        self._server = BackgroundServer(host, port, _handler(self), "portctl-control")

    @property
    def address(self) -> str:
        return self._server.address

    def start(self) -> ControlServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def status(self) -> dict[str, Any]:
        doc = self.agent.status.to_json()
        doc["events"] = self.agent.events.to_json()
        doc["source"] = self.agent.describe_source()
        doc["interval"] = self.agent.config.interval
        return doc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    agent = server.agent

    class Handler(BaseHTTPRequestHandler):
        timeout = 30

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass

        def do_GET(self) -> None:
            if not self._host_allowed():
                return
            path = urlsplit(self.path).path
            if path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                ready = agent.ready()
                manifests = [
                    {"file": s.file, "ready": s.ready == "True", "reason": s.reason, "message": s.message}
                    for s in agent.status.sections
                ]
                doc = {"ready": ready, "condition": _ready(server), "manifests": manifests}
                self._json(200 if ready else 503, doc)
            elif path == "/status":
                self._json(200, server.status())
            elif path == "/metrics":
                from .metrics import CONTENT_TYPE

                self._send(200, agent.metrics.exposition(), CONTENT_TYPE)
            else:
                self._json(404, {"error": f"no such endpoint {path}"})

        def do_POST(self) -> None:
            if not self._host_allowed():
                return
            if self.headers.get(CONTROL_HEADER) != "1":
                self._json(403, {"error": f"control requests need the header {CONTROL_HEADER}: 1"})
                return
            url = urlsplit(self.path)
            if url.path == "/reconcile":
                if agent.status.suspended:
                    self._json(409, {"error": "the agent is suspended; resume it first"})
                    return
                try:
                    wait = float(parse_qs(url.query).get("wait", [str(DEFAULT_WAIT)])[0])
                except ValueError:
                    self._json(400, {"error": "wait must be a number of seconds"})
                    return
                ticket = agent.request_reconcile()
                done = agent.wait_for(ticket, min(max(wait, 0.0), 600.0))
                results = server.status()["results"]
                self._json(200 if done else 202, {"done": done, "result": results[0] if done and results else None})
            elif url.path == "/suspend":
                agent.suspend()
                self._json(200, {"suspended": True})
            elif url.path == "/resume":
                agent.resume()
                self._json(200, {"suspended": False})
            else:
                self._json(404, {"error": f"no such endpoint {url.path}"})

        def _host_allowed(self) -> bool:
            if not server.loopback_only:
                return True
            host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
            if _is_loopback(host):
                return True
            self._json(421, {"error": "this listener only answers requests addressed to loopback"})
            return False

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            self._send(status, json.dumps(doc, indent=2).encode() + b"\n", "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _ready(server: ControlServer) -> dict[str, Any] | None:
    from dataclasses import asdict

    from .status import READY

    condition = server.agent.status.condition(READY)
    return asdict(condition) if condition else None


# -- the client side: `portctl agent status|reconcile|suspend|resume` --------------------------


def call(listen: str, verb: str, *, wait: float = DEFAULT_WAIT) -> dict[str, Any]:
    """Send `verb` to the agent listening on `listen`; returns its JSON answer."""
    host, _, port = listen.rpartition(":")
    base = f"http://{host if ':' not in host.strip('[]') else '[' + host.strip('[]') + ']'}:{port}"
    if verb == "status":
        request = urllib.request.Request(f"{base}/status")
        timeout = 10.0
    else:
        query = f"?wait={wait:g}" if verb == "reconcile" else ""
        request = urllib.request.Request(f"{base}/{verb}{query}", data=b"", method="POST")
        request.add_header(CONTROL_HEADER, "1")
        timeout = wait + 10.0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the agent is local: no proxy
    try:
        with opener.open(request, timeout=timeout) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise PortctlError(f"the agent at {listen} refused {verb}: HTTP {exc.code} {detail}".rstrip()) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PortctlError(f"no agent answers at {listen} ({reason}); is `portctl agent` running?") from exc
    except ValueError as exc:
        raise PortctlError(f"the agent at {listen} sent an answer that is not JSON") from exc
