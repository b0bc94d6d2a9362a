"""--trace and PORTCTL_TRACE: every request to the router and its answer, on stderr, with timings."""

from __future__ import annotations

import io
import re

import pytest

from reconciler.backends.http import Exchange, HttpClient
from reconciler.backends.trace import Tracer, lines
from reconciler.emulator import EmulatorServer
from tests.helpers import MANIFEST, portctl, write

SUMMARY = re.compile(
    r"^trace: (?P<method>GET|POST) (?P<url>http://\S+)(?: (?P<action>\w+))?: "
    r"HTTP (?P<status>\d{3}), sent (?P<sent>\d+) bytes, received (?P<got>\d+) bytes in (?P<ms>\d+\.\d) ms$"
)


def summaries(err: str) -> list[re.Match[str]]:
    return [m for m in map(SUMMARY.match, err.splitlines()) if m]


def test_trace_shows_every_request_and_answer_of_a_plan(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cold plan with --trace: the description GETs, then each SOAP action with status, sizes and a time."""
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url, "--trace")
    assert run.code == 0
    seen = summaries(run.err)
    assert seen[0]["method"] == "GET" and seen[0]["url"] == emulator.url
    actions = [m["action"] for m in seen if m["method"] == "POST"]
    assert "GetExternalIPAddress" in actions and "GetListOfPortMappings" in actions
    assert all(int(m["got"]) > 0 for m in seen)
    assert all(int(m["sent"]) > 0 for m in seen if m["method"] == "POST")
    # Both bodies of an action are shown: the envelope sent and the answer.
    assert "  > <?xml" in run.err and "GetExternalIPAddressResponse" in run.err
    assert "trace:" not in run.out  # the plan on stdout stays clean for pipes


def test_portctl_trace_env_turns_it_on(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PORTCTL_TRACE=1 traces without the flag; PORTCTL_TRACE=0 does not."""
    monkeypatch.setenv("PORTCTL_TRACE", "1")
    run = portctl(capsys, "show", "--router", emulator.url)
    assert run.code == 0 and summaries(run.err)
    monkeypatch.setenv("PORTCTL_TRACE", "0")
    run = portctl(capsys, "show", "--router", emulator.url)
    assert run.code == 0 and "trace:" not in run.err


def test_trace_shows_the_fault_a_router_answered(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The index probe past the table's end is answered 713: the trace shows HTTP 500 and the fault's body."""
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url, "--trace")
    assert run.code == 0
    err = run.err.splitlines()
    at = next(
        i for i, line in enumerate(err) if (m := SUMMARY.match(line)) and m["action"] == "GetGenericPortMappingEntry"
    )
    assert SUMMARY.match(err[at])["status"] == "500"  # type: ignore[index]
    answer = []
    for line in err[at + 1 :]:
        if SUMMARY.match(line):
            break
        answer.append(line)
    assert any("<errorCode>713</errorCode>" in line and line.startswith("trace:   < ") for line in answer)


def test_a_request_without_an_answer_is_traced_with_why(capsys: pytest.CaptureFixture[str], tmp_path: str) -> None:
    """A router that refuses the connection: the trace says the request got no answer, and why."""
    run = portctl(capsys, "show", "--router", "http://127.0.0.1:9/rootDesc.xml", "--trace")
    assert run.code == 1
    traced = [line for line in run.err.splitlines() if line.startswith("trace: GET http://127.0.0.1:9/rootDesc.xml")]
    assert traced and "no answer after" in traced[0] and "connection refused" in traced[0]


def test_bodies_are_trimmed_and_made_printable() -> None:
    """Terminal escapes in an answer become visible escapes, and a long body is cut with a count of the rest."""
    hostile = b"<a>\x1b]0;owned\x07 \xff</a>\n" + b"x" * 5000
    out = lines(Exchange("POST", "http://r/ctl", "GetSpecificPortMappingEntry", b"<q/>", 200, hostile, 0.0123))
    assert out[0] == (
        "POST http://r/ctl GetSpecificPortMappingEntry: HTTP 200, sent 4 bytes, received 5020 bytes in 12.3 ms"
    )
    text = "\n".join(out)
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;owned\\x07" in text and "\\xff" in text
    shown = hostile.decode("utf-8", "backslashreplace")  # \xff is shown as four characters
    assert out[-1] == f"  < ... ({len(shown) - 1500} more characters)"


def test_the_client_reports_each_exchange_with_its_clock(emulator: EmulatorServer) -> None:
    """The hook sits on the HTTP client: one exchange per request, timed by the injected clock (which the
    request's deadline reads too: it stands at 10.25 after the start)."""
    ticks = iter([10.0])
    seen: list[Exchange] = []
    host, port = "127.0.0.1", int(emulator.url.split(":")[2].split("/")[0])
    client = HttpClient(host, port, timeout=30, observe=seen.append, clock=lambda: next(ticks, 10.25))
    resp = client.request("GET", "/rootDesc.xml")
    client.close()
    assert [(x.method, x.url, x.status, x.received, x.seconds) for x in seen] == [
        ("GET", f"http://{host}:{port}/rootDesc.xml", resp.status, resp.body, 0.25)
    ]


def test_the_tracer_writes_whole_exchanges() -> None:
    """Each exchange is written at once, every line prefixed, so threads cannot interleave halves."""
    stream = io.StringIO()
    Tracer(stream)(Exchange("GET", "http://r/d.xml", "", b"", None, b"", 0.5, "connection refused"))
    assert stream.getvalue() == "trace: GET http://r/d.xml: no answer after 500.0 ms: connection refused\n"


def test_an_ssdp_search_and_its_answer_read_as_datagrams() -> None:
    """An M-SEARCH is shown as sent (not as a request that got no answer); an answer shows its LOCATION."""
    from reconciler import discovery

    target = discovery.SEARCH_TARGETS[0]
    search = discovery.m_search(target)
    sent = lines(Exchange("M-SEARCH", "udp://239.255.255.250:1900", target, search, None, b"", 0.0))
    assert sent[0] == f"M-SEARCH udp://239.255.255.250:1900 {target}: sent {len(search)} bytes"
    assert sent[1:] == [f"  > {line}" for line in search.decode().splitlines() if line]
    reply = b"HTTP/1.1 200 OK\r\nST: x\r\nLOCATION: http://192.168.1.1:5000/d.xml\r\n\r\n"
    note = "LOCATION http://192.168.1.1:5000/d.xml"
    answered = lines(Exchange("M-SEARCH", "udp://192.168.1.1:1900", target, b"", 200, reply, 0.0421, note=note))
    assert answered[0] == (
        f"M-SEARCH udp://192.168.1.1:1900 {target}: HTTP 200, sent 0 bytes, received {len(reply)} bytes in 42.1 ms; "
        f"{note}"
    )


@pytest.mark.parametrize(
    ("reply", "source", "why"),
    [
        (b"HTTP/1.1 404 Not Found\r\n\r\n", "192.168.1.1", "not an HTTP/1.1 200 answer"),
        (b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://192.168.1.1/d.xml\r\n\r\n", "192.168.1.1",
         "ST is not an Internet Gateway Device"),
        (b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
         b"LOCATION: http://192.168.1.9/d.xml\r\n\r\n", "192.168.1.1",
         "LOCATION is not an http URL to the responder or the default gateway"),
    ],
)  # fmt: skip
def test_an_ssdp_answer_that_is_not_followed_says_why(reply: bytes, source: str, why: str) -> None:
    """judge_reply names the reason an answer is ignored, which --trace shows; parse_reply still says None."""
    from reconciler import discovery

    assert discovery.judge_reply(reply, source) == why
    assert discovery.parse_reply(reply, source) is None


def test_the_agent_traces_its_event_subscriptions(tmp_path: str, emulator: EmulatorServer) -> None:
    """An agent given an observer (--trace) shows its SUBSCRIBE, with the SID granted, and its UNSUBSCRIBE."""
    from reconciler.agent.config import AgentConfig
    from reconciler.agent.controller import Agent
    from reconciler.agent.logs import JsonLog
    from reconciler.cache import Cache
    from tests.agenthelp import ROUTER_TIMEOUT, Clock

    seen: list[Exchange] = []
    path = write(tmp_path, MANIFEST)
    clock = Clock()
    config = AgentConfig(manifest=path, settle=0, router=emulator.url, timeout=ROUTER_TIMEOUT, events=True)
    agent = Agent(config, log=JsonLog(io.StringIO()), clock=clock, cache=Cache.from_env(), observe=seen.append)
    try:
        agent.step()  # the first pass: connect, reconcile, attach the listener
        agent.step()  # nothing else due: subscribe
        sid, url = agent.events.sid, agent.events.url
        granted = round((agent.events.next_renewal - clock.now) * 2)  # renewed at half the granted time
    finally:
        agent.events.close()
    gena = [(x.method, x.url, x.status, x.note) for x in seen if x.method in ("SUBSCRIBE", "UNSUBSCRIBE")]
    assert sid.startswith("uuid:") and url.startswith(emulator.url.rsplit("/", 1)[0])
    assert gena == [("SUBSCRIBE", url, 200, f"SID {sid} for {granted}s"), ("UNSUBSCRIBE", url, 200, f"SID {sid}")]
    assert lines(next(x for x in seen if x.method == "SUBSCRIBE"))[0].endswith(f"; SID {sid} for {granted}s")
