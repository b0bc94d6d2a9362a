"""A router's boot, read from its uptime and its SSDP BOOTID, and the one comparison that says it restarted."""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import datetime
from typing import Any

import pytest

from reconciler import discovery
from reconciler.backends.pcp.epoch import NATPMP_RULE, PCP_RULE
from reconciler.boot import Boot, Booted, restarted
from reconciler.emulator import EmulatorServer, Router
from reconciler.emulator.ssdp import SsdpResponder
from tests.agenthelp import DEADLINE, Clock
from tests.helpers import portctl

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
UPTIME = {"source": "uptime", "uptime_seconds": None, "epoch_seconds": None, "since": None, "boot_id": None}


@pytest.mark.parametrize(
    ("before", "now", "why"),
    [
        (Boot.from_uptime(100, 0.0, 0.1, 5), Boot.from_uptime(200, 100.0, 100.1, 6), "its BOOTID went from 5 to 6"),
        (Boot.from_uptime(100, 0.0, 0.1, 5), Boot.from_uptime(5, 50.0, 50.1, 5), "its uptime went back"),
        (Boot.from_uptime(5, 0.0, 0.1), Boot.from_uptime(11, 15.0, 15.1), "its uptime went back"),  # a quick restart
        (Boot.from_uptime(100, 0.0, 0.1, 5), Boot.from_uptime(110, 10.0, 12.5, 5), ""),  # a slow answer
        (Boot.from_uptime(100, 0.0, 0.1, 5), Boot.from_uptime(None, 10.0, 10.1, None), ""),  # nothing said
        (Boot.from_uptime(None, 0.0, 0.1, 5), Boot.from_uptime(None, 10.0, 10.1, 5), ""),
        (None, Boot.from_uptime(3, 10.0, 10.1, 9), ""),  # nothing to compare with
    ],
)
def test_a_restart_is_a_new_boot_id_or_a_boot_moment_that_moved_forward(
    before: Boot | None, now: Boot, why: str
) -> None:
    """A changed BOOTID is a restart whatever the uptime says; else only a boot later than the last reading allows."""
    assert restarted(before, now) == why


def test_a_reading_that_misses_the_boot_id_keeps_the_one_known() -> None:
    """A BOOTID missed once is not forgotten, so the next one that differs is still a restart."""
    first = Boot.from_uptime(100, 0.0, 0.1, 5)
    kept = Boot.from_uptime(110, 10.0, 10.1, None).after(first)
    assert kept.boot_id == 5
    assert restarted(kept, Boot.from_uptime(120, 20.0, 20.1, 6)) == "its BOOTID went from 5 to 6"


@pytest.mark.parametrize(
    ("before", "now", "why"),
    [
        # PCP (RFC 6887 section 8.5): back by more than a second, or off the client's clock by 2 s + 1/16
        ((100, 0.0), (5, 15.0), "its PCP epoch went from 100 s to 5 s in 15 s"),
        ((3, 0.0), (14, 30.0), "its PCP epoch went from 3 s to 14 s in 30 s"),  # restarted within the interval
        ((100, 0.0), (99, 0.5), ""),  # a second back is quantisation
        ((1000, 0.0), (4580, 3600.0), ""),  # a router clock 0.6 % slow: drift, not a restart
        ((100, 0.0), (113, 15.0), ""),
    ],
)
def test_a_pcp_epoch_is_judged_by_its_rfc_not_by_the_uptime_bracket(
    before: tuple[int, float], now: tuple[int, float], why: str
) -> None:
    """A PCP router's epoch that fell behind is a restart only beyond the RFC's allowance for drift."""
    first = Boot.from_epoch(before[0], before[1] - 0.1, before[1], PCP_RULE)
    second = Boot.from_epoch(now[0], now[1] - 0.1, now[1], PCP_RULE)
    assert restarted(first, second) == why
    assert restarted(first.after(None), second.after(first)) == why  # what the agent keeps is still judged so


def test_a_natpmp_epoch_is_judged_by_its_rfc() -> None:
    """RFC 6886 section 3.6: at least 7/8 of the client's elapsed time, less 2 s, or the router lost its state."""
    first = Boot.from_epoch(1000, 0.0, 0.1, NATPMP_RULE)
    # 1000 s later the epoch should be 1000 + 875 at least, less 2 s.
    assert restarted(first, Boot.from_epoch(1874, 1000.0, 1000.1, NATPMP_RULE)) == ""
    later = Boot.from_epoch(1872, 1000.0, 1000.1, NATPMP_RULE)
    assert restarted(first, later) == "its NAT-PMP epoch went from 1000 s to 1872 s in 1000 s"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7),
        ("1700000000", 1700000000),  # miniupnpd: the time it started
        ("2147483647", 2**31 - 1),
        ("2147483648", None),  # beyond the 31 bits UDA 1.1 allows
        ("", None),
        ("-1", None),
        ("+7", None),
        ("\u0667", None),  # an Arabic-Indic seven: int() would take it
        ("7_0", None),
        ("12345678901", None),
    ],
)
def test_bootid_is_read_strictly_from_an_msearch_answer(header: str, expected: int | None) -> None:
    """BOOTID.UPNP.ORG is ASCII digits of a 31-bit number, else read as absent; the answer is valid either way."""
    data = (
        "HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
        f"ST: {discovery.SEARCH_TARGETS[1]}\r\nBOOTID.UPNP.ORG: {header}\r\nCONFIGID.UPNP.ORG: 3\r\n\r\n"
    ).encode()
    answer = discovery.parse_reply(data, "192.168.1.1")
    assert answer is not None
    assert (answer.boot_id, answer.config_id) == (expected, "3")


@pytest.mark.parametrize(
    ("booted", "text", "doc"),
    [
        (
            Booted(3 * 3600 + 12 * 60, NOW, 7),
            "up 3h12m, since 2027-01-15T04:48:00Z, BOOTID 7",
            {**UPTIME, "uptime_seconds": 11520, "since": "2027-01-15T04:48:00Z", "boot_id": 7},
        ),
        (Booted(None, NOW, 7), "uptime unknown, BOOTID 7", {**UPTIME, "boot_id": 7}),
        (
            Booted(59, NOW),
            "up 59s, since 2027-01-15T07:59:01Z",
            {**UPTIME, "uptime_seconds": 59, "since": "2027-01-15T07:59:01Z"},
        ),
        (
            Booted(300, NOW, None, PCP_RULE),
            "PCP epoch 5m (mapping state since 2027-01-15T07:55:00Z)",
            {**UPTIME, "source": "pcp-epoch", "epoch_seconds": 300, "since": "2027-01-15T07:55:00Z"},
        ),
        (Booted(None, NOW, None, NATPMP_RULE), "NAT-PMP epoch unknown", {**UPTIME, "source": "natpmp-epoch"}),
    ],
)
def test_show_says_since_when_the_router_is_up(booted: Booted, text: str, doc: dict[str, object]) -> None:
    """The boot moment is the wall clock minus the uptime (or a PCP/NAT-PMP epoch, named so), in UTC;
    BOOTID when the router gives one."""
    assert (booted.text(), booted.to_json()) == (text, doc)


def test_the_boot_id_is_asked_of_the_router_itself(tmp_path: Any) -> None:
    """A unicast M-SEARCH to the router gets its BOOTID; an answer naming another LOCATION does not count,
    and a host with nothing on the SSDP port is unknown at once, not after the whole wait."""
    boot = [4]
    location = "http://127.0.0.1:5000/rootDesc.xml"
    with contextlib.ExitStack() as stack:
        ssdp = SsdpResponder(location, "uuid:x", "127.0.0.1", port=0, boot_id=lambda: boot[0]).start()
        stack.callback(ssdp.stop)
        other = SsdpResponder("http://127.0.0.1:5001/rootDesc.xml", "uuid:y", "127.0.0.1", port=0).start()
        stack.callback(other.stop)
        assert discovery.ask_boot_id("127.0.0.1", location, port=ssdp.port, timeout=DEADLINE) == 4
        boot[0] = 5
        assert discovery.ask_boot_id("127.0.0.1", location, port=ssdp.port, timeout=DEADLINE) == 5
        assert discovery.ask_boot_id("127.0.0.1", location, port=other.port, timeout=0.5) is None
        closed = other.port
    started = time.monotonic()
    assert discovery.ask_boot_id("127.0.0.1", location, port=closed, timeout=DEADLINE) is None
    assert time.monotonic() - started < DEADLINE  # refused, not timed out


def test_show_reports_since_when_the_router_is_up(capsys: pytest.CaptureFixture[str]) -> None:
    """`portctl show` gives the router's uptime and the UTC moment it booted, in text and in JSON."""
    clock = Clock()
    with EmulatorServer(Router(clock=clock)) as server:
        clock.advance(3 * 3600 + 12 * 60)
        before = time.time()
        doc = json.loads(portctl(capsys, "show", "--router", server.url, "--json").out)
        after = time.time()
        text = portctl(capsys, "show", "--router", server.url, "--no-color").out
    boot = doc["boot"]
    assert (boot["uptime_seconds"], boot["boot_id"]) == (11520, None)
    since = datetime.fromisoformat(boot["since"]).timestamp()
    assert before - 11520 - 1 <= since <= after - 11520
    assert re.search(r"^Booted: up 3h12m, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.M), text


def test_one_unanswered_boot_id_search_does_not_stop_the_asking(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost or late SSDP answer is asked again at the next check; only SSDP_TRIES misses in a row
    stop a connection asking (each would wait a second for nothing)."""
    from reconciler import api
    from reconciler.backends.upnp import backend as upnp_backend
    from reconciler.cache import Cache

    answers = iter([None, 7, None, None, None, 8])
    asked: list[int | None] = []

    def ask(*args: Any, **kwargs: Any) -> int | None:
        asked.append(found := next(answers))
        return found

    monkeypatch.setattr(discovery, "ask_boot_id", ask)
    backend = api.connect(emulator.url, Cache(None))
    seen = [backend.boot_id() for _ in range(6)]
    assert seen == [None, 7, None, None, None, None]
    assert len(asked) == 2 + upnp_backend.SSDP_TRIES  # the sixth check asked nothing
