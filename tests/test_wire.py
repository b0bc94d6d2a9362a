"""Hostile routers over the wire: trickled, oversized and odd-digit answers to `portctl plan` and the agent.

A small HTTP server on loopback stands in front of the emulator and passes every request on, except
those a case answers itself: one byte at a time, larger than the 1 MiB cap, or with numbers that
Python's int() refuses or misreads. `plan` must end with one clear error within its deadline
(bounded generously: --timeout 2 and 20 s of slack for a busy machine), and the agent's loop must
keep running and try again. The cases are a fixed list, so a run is the same every time.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.agent.config import AgentConfig
from reconciler.emulator import EmulatorServer
from tests.agenthelp import AgentRun, manifest
from tests.helpers import MANIFEST, portctl, write
from tests.routerlab import wait_for

TIMEOUT = 2.0
SLACK = 60.0  # never a tight bound: the machine is shared (a trickled answer would take minutes)
TRICKLE = 0.5  # seconds between bytes: each byte comes well within any per-read timeout
ENV = '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
END = "</s:Body></s:Envelope>"


@dataclass(frozen=True)
class Answer:
    """What the hostile server sends: `head` (status line and headers), a blank line, then `body`."""

    head: str
    body: bytes = b""
    trickle_head: bool = False  # send the head one byte every TRICKLE seconds
    trickle_body: bool = False

    def wire(self) -> tuple[bytes, bytes]:
        return (self.head.rstrip("\r\n") + "\r\n\r\n").encode("latin-1"), self.body


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def action(self) -> str:
        return self.headers.get("soapaction", "").strip('"').rpartition("#")[2]


Rule = Callable[[Request], Answer | None]


class HostileRouter:
    """Serves on loopback; `rule` answers what it wants to, the emulator `upstream` the rest."""

    def __init__(self, upstream: EmulatorServer, rule: Rule) -> None:
        self.upstream, self.rule = upstream, rule
        self.stopping = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, name="hostile-router", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/rootDesc.xml"

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(10)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)  # a closed listening socket does not wake accept(): look up now and then
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                request = _read_request(conn)
                answer = self.rule(request) or self._forward(request)
                head, body = answer.wire()
                self._send(conn, head, answer.trickle_head)
                self._send(conn, body, answer.trickle_body)
            except OSError:
                return  # the client gave up, as it should

    def _send(self, conn: socket.socket, data: bytes, trickle: bool) -> None:
        if not trickle:
            conn.sendall(data)
            return
        for i in range(len(data)):
            if self.stopping.wait(TRICKLE):
                return
            conn.sendall(data[i : i + 1])

    def _forward(self, request: Request) -> Answer:
        host, port = self.upstream.url.split("/")[2].split(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in ("host", "connection", "content-length")}
            upstream.request(request.method, request.path, body=request.body or None, headers=headers)
            resp = upstream.getresponse()
            body = resp.read()
        finally:
            upstream.close()
        kept = "".join(
            f"{k}: {v}\r\n" for k, v in resp.getheaders() if k.lower() not in ("connection", "content-length")
        )
        return Answer(
            f"HTTP/1.1 {resp.status} {resp.reason}\r\n{kept}Content-Length: {len(body)}\r\nConnection: close", body
        )


def _read_request(conn: socket.socket) -> Request:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError
        body += chunk
    return Request(method, path, headers, body)


def soap(action: str, values: str, status: str = "200 OK") -> Answer:
    body = f'{ENV}<u:{action}Response xmlns:u="x">{values}</u:{action}Response>{END}'.encode()
    return Answer(f"HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}", body)


def on_get(path: str, answer: Answer) -> Rule:
    return lambda r: answer if r.method == "GET" and r.path == path else None


def on_action(action: str, answer: Answer) -> Rule:
    return lambda r: answer if r.action() == action else None


DESCRIPTION_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/xml"
FAULT = (
    f"{ENV}<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError>"
    f"<errorCode>7\u00b94</errorCode><errorDescription>x</errorDescription></UPnPError></detail></s:Fault>{END}"
).encode()
FULLWIDTH_80 = "\uff18\uff10"  # int() reads it as 80
ARABIC_3600 = "\u0663\u0666\u0660\u0660"  # int() reads it as 3600
ROW = (
    "<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort><NewProtocol>TCP</NewProtocol>"
    "<NewInternalPort>80</NewInternalPort><NewInternalClient>192.168.1.9</NewInternalClient>"
    "<NewEnabled>1</NewEnabled><NewPortMappingDescription>another app</NewPortMappingDescription>"
    "<NewLeaseDuration>{lease}</NewLeaseDuration>"
)

# id -> (what the router does wrong, words the one error must contain)
PLAN_CASES: dict[str, tuple[Rule, str]] = {
    "headers trickled": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nX-Pad: " + "a" * 200, trickle_head=True)),
        f"did not answer within {TIMEOUT:g}s",
    ),
    "body trickled": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nContent-Length: 200", b"<" * 200, trickle_body=True)),
        f"did not answer within {TIMEOUT:g}s",
    ),
    "declared above the cap": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + f"\r\nContent-Length: {2 << 20}")),
        "larger than 1048576 bytes; refused",
    ),
    "sent above the cap": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nConnection: close", b"<" * ((1 << 20) + 1))),
        "larger than 1048576 bytes; refused",
    ),
    "Content-Length of 5000 digits": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nContent-Length: " + "9" * 5000)),
        "Content-Length '999999999999999999999999'... is not a whole number of at most 20 digits",
    ),
    "Content-Length in superscript": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nContent-Length: \u00b2", b"<x/>")),
        "Content-Length '\u00b2' is not a whole number",
    ),
    "Content-Length with a sign": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nContent-Length: +4", b"<x/>")),
        "Content-Length '+4' is not a whole number",
    ),
    "Content-Length with a separator": (
        on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nContent-Length: 0_4", b"<x/>")),
        "Content-Length '0_4' is not a whole number",
    ),
    "errorCode in superscript": (
        on_action("GetExternalIPAddress", Answer("HTTP/1.1 500 Internal Server Error", FAULT)),
        "GetExternalIPAddress: malformed answer from the router (a SOAP fault without a UPnP error code: "
        "errorCode '7\u00b94' is not a whole number",
    ),
    "port in fullwidth digits": (
        on_action(
            "GetGenericPortMappingEntry", soap("GetGenericPortMappingEntry", ROW.format(port=FULLWIDTH_80, lease=0))
        ),
        f"GetGenericPortMappingEntry: malformed answer from the router (NewExternalPort {FULLWIDTH_80!r} is not",
    ),
    "lease in Arabic-Indic digits": (
        on_action(
            "GetGenericPortMappingEntry", soap("GetGenericPortMappingEntry", ROW.format(port=80, lease=ARABIC_3600))
        ),
        f"GetGenericPortMappingEntry: malformed answer from the router (NewLeaseDuration {ARABIC_3600!r} is not",
    ),
}


@pytest.fixture
def hostile() -> Iterator[Callable[[EmulatorServer, Rule], HostileRouter]]:
    servers: list[HostileRouter] = []

    def start(upstream: EmulatorServer, rule: Rule) -> HostileRouter:
        servers.append(HostileRouter(upstream, rule))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("case", PLAN_CASES)
def test_plan_against_a_hostile_router_is_one_error_in_time(
    tmp_path: str,
    capsys: pytest.CaptureFixture[str],
    emulator_v1: EmulatorServer,
    hostile: Callable[[EmulatorServer, Rule], HostileRouter],
    case: str,
) -> None:
    """`plan` ends within its deadline with exit 1 and one line naming what was wrong; nothing is written."""
    rule, words = PLAN_CASES[case]
    router = hostile(emulator_v1, rule)
    started = time.monotonic()
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", router.url, "--timeout", f"{TIMEOUT:g}")
    elapsed = time.monotonic() - started
    assert run.code == 1 and "Traceback" not in run.err
    assert run.err.startswith("error: ") and run.err.count("\n") == 1, run.err
    assert words in run.err, run.err
    assert elapsed < TIMEOUT + SLACK, f"plan took {elapsed:.1f}s"
    assert emulator_v1.router.calls["AddPortMapping"] == 0


def agent_config(router: HostileRouter, tmp_path: Any, **kw: Any) -> AgentConfig:
    path = write(tmp_path, manifest(("web", 8080, 80)))
    settings: dict[str, Any] = {"interval": 60, "watch": 1, "timeout": TIMEOUT, "events": False, "settle": 0}
    settings.update(kw)
    return AgentConfig(manifest=path, router=router.url, **settings)


def keeps_running(run: AgentRun, passes: int) -> None:
    """The loop is alive, answers /healthz, and has attempted at least `passes` passes."""
    wait_for(lambda: len(run.status()["results"]) >= passes, TIMEOUT + SLACK, f"{passes} passes attempted")
    assert run.thread.is_alive()
    assert run.get("/healthz")[0] == 200


def test_agent_survives_a_router_that_trickles(
    tmp_path: Any, emulator: EmulatorServer, hostile: Callable[[EmulatorServer, Rule], HostileRouter]
) -> None:
    """A pass against a trickling router fails by its deadline, and the loop tries again after backing off."""
    router = hostile(
        emulator, on_get("/rootDesc.xml", Answer(DESCRIPTION_HEAD + "\r\nX-Pad: " + "a" * 200, trickle_head=True))
    )
    with AgentRun(agent_config(router, tmp_path)) as run:
        keeps_running(run, 1)
        first = run.status()["results"][-1]
        assert first["result"] == "failed" and f"did not answer within {TIMEOUT:g}s" in first["message"], first
        keeps_running(run, 2)


def test_agent_survives_an_uptime_in_superscript(
    tmp_path: Any, emulator: EmulatorServer, hostile: Callable[[EmulatorServer, Rule], HostileRouter]
) -> None:
    """An uptime int() cannot read is a protocol error of the watch check: logged, and the loop goes on with a pass."""
    status = "<NewConnectionStatus>Connected</NewConnectionStatus><NewUptime>1\u00b2</NewUptime>"
    router = hostile(emulator, on_action("GetStatusInfo", soap("GetStatusInfo", status)))
    with AgentRun(agent_config(router, tmp_path)) as run:
        wait_for(
            lambda: any("NewUptime '1\u00b2' is not a whole number" in line["msg"] for line in run.log_lines()),
            TIMEOUT + SLACK,
            "the watch check's error in the log",
        )
        run.agent.request_reconcile()
        keeps_running(run, 2)


def test_agent_survives_a_subscription_timeout_in_superscript(
    tmp_path: Any, emulator: EmulatorServer, hostile: Callable[[EmulatorServer, Rule], HostileRouter]
) -> None:
    """A GENA TIMEOUT int() cannot read refuses the subscription: the agent polls, and its loop goes on."""
    answer = Answer("HTTP/1.1 200 OK\r\nSID: uuid:hostile\r\nTIMEOUT: Second-\u00b2\r\nContent-Length: 0")
    router = hostile(emulator, lambda r: answer if r.method == "SUBSCRIBE" else None)
    with AgentRun(agent_config(router, tmp_path, events=True)) as run:
        wait_for(
            lambda: any(
                "'Second-\u00b2' is not a TIMEOUT such as Second-1800" in line["msg"] for line in run.log_lines()
            ),
            TIMEOUT + SLACK,
            "the refused subscription in the log",
        )
        assert run.status()["events"]["subscribed"] is False
        run.agent.request_reconcile()
        keeps_running(run, 2)


def test_a_deadline_socket_ends_a_trickle_by_the_deadline_even_when_bytes_keep_coming() -> None:
    """Every receive gets only what is left of one deadline: bytes arriving in time do not extend it."""
    from reconciler.backends.deadline import DeadlineSocket

    listener = socket.create_server(("127.0.0.1", 0))
    ticks = iter(range(1000))  # the clock moves one second per look; the peer's bytes are all there already
    sock = DeadlineSocket.connect_by("127.0.0.1", listener.getsockname()[1], 5.0, lambda: float(next(ticks)))
    peer, _ = listener.accept()
    with listener, peer, sock:
        peer.sendall(b"x" * 100)
        received = b""
        with pytest.raises(TimeoutError):
            while True:
                received += sock.recv(1)
        assert 0 < len(received) < 5
