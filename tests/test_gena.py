"""GENA eventing on the wire: the listener accepts only well-formed events from the router, on its own path."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from reconciler.backends import gena

EVENT = (
    b'<?xml version="1.0"?><e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0">'
    b"<e:property><PortMappingNumberOfEntries>3</PortMappingNumberOfEntries></e:property></e:propertyset>"
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><e:propertyset>&b;</e:propertyset>'
)
HEADERS = {"NT": "upnp:event", "NTS": "upnp:propchange", "SID": "uuid:1", "SEQ": "1"}


@pytest.fixture
def listener() -> Iterator[tuple[gena.EventListener, list[gena.Event]]]:
    heard: list[gena.Event] = []
    events = gena.EventListener("127.0.0.1", "127.0.0.1", heard.append).start()
    yield events, heard
    events.stop()


def notify(callback: str, body: bytes, path: str | None = None, **headers: str) -> int:
    url = urlsplit(callback)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    conn.request("NOTIFY", path or url.path, body=body, headers={**HEADERS, **headers})
    status = conn.getresponse().status
    conn.close()
    return status


def test_an_event_from_the_router_is_heard(listener: tuple[gena.EventListener, list[gena.Event]]) -> None:
    """A well-formed NOTIFY on the listener's path is answered 200 and delivered with its variables."""
    events, heard = listener
    assert notify(events.callback, EVENT) == 200
    assert heard == [gena.Event("uuid:1", 1, {"PortMappingNumberOfEntries": "3"})]


@pytest.mark.parametrize(
    ("body", "path", "headers", "status"),
    [
        (EVENT, "/portctl/events/guessed", {}, 403),
        (EVENT, None, {"NTS": "upnp:other"}, 412),
        (BILLION_LAUGHS, None, {}, 400),
        (b"<e:propertyset><unclosed>", None, {}, 400),
        (b"<html/>", None, {}, 400),
        (EVENT, None, {"SEQ": "one"}, 400),
        (b"x" * (gena.MAX_EVENT_BYTES + 1), None, {}, 413),
    ],
)
def test_hostile_or_misdirected_events_are_refused(
    listener: tuple[gena.EventListener, list[gena.Event]],
    body: bytes,
    path: str | None,
    headers: dict[str, str],
    status: int,
) -> None:
    """Wrong path, wrong headers, entities, malformed or oversized bodies: refused, and nothing is delivered."""
    events, heard = listener
    assert notify(events.callback, body, path, **headers) == status
    assert heard == []


def test_timeout_headers() -> None:
    """Second-N is N up to the limit; infinite, zero and nonsense give the limit."""
    assert [gena.timeout_seconds(h, 1800) for h in ("Second-300", "second-9999", "infinite", "Second-0", "")] == [
        300,
        1800,
        1800,
        1800,
        1800,
    ]
