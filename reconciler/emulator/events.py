"""GENA eventing for the emulated router: SUBSCRIBE, renewal, UNSUBSCRIBE, and a NOTIFY to every
subscriber when the table changes (miniupnpd sends PortMappingNumberOfEntries the same way)."""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..backends.gena import timeout_seconds

EVENT_PATH = "/evt/IPConn"
MAX_SECONDS = 1800


@dataclass
class _Subscriber:
    callback: str
    expires: float
    seq: int = 0


class Publisher:
    def __init__(self) -> None:
        self._subscribers: dict[str, _Subscriber] = {}
        self._lock = threading.Lock()
        self.sent = 0  # NOTIFY requests delivered, for tests

    def subscribe(self, callback_header: str, timeout_header: str, count: int) -> tuple[str, int] | None:
        """A new subscription (sid, seconds), its initial event sent; None for an unusable CALLBACK."""
        urls = re.findall(r"<([^>]+)>", callback_header)
        if not urls or urlsplit(urls[0]).scheme != "http":
            return None
        seconds = _granted(timeout_header)
        sid = f"uuid:{uuid.uuid4()}"
        with self._lock:
            self._subscribers[sid] = _Subscriber(urls[0], time.monotonic() + seconds)
        self._send(sid, count)
        return sid, seconds

    def renew(self, sid: str, timeout_header: str) -> int | None:
        seconds = _granted(timeout_header)
        with self._lock:
            sub = self._subscribers.get(sid)
            if sub is None or sub.expires < time.monotonic():
                self._subscribers.pop(sid, None)
                return None
            sub.expires = time.monotonic() + seconds
        return seconds

    def unsubscribe(self, sid: str) -> bool:
        with self._lock:
            return self._subscribers.pop(sid, None) is not None

    def forget_all(self) -> None:
        """A restarted router knows no subscribers."""
        with self._lock:
            self._subscribers.clear()

    def publish(self, count: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._subscribers = {k: v for k, v in self._subscribers.items() if v.expires > now}
            sids = list(self._subscribers)
        for sid in sids:
            self._send(sid, count)

    def _send(self, sid: str, count: int) -> None:
        with self._lock:
            sub = self._subscribers.get(sid)
            if sub is None:
                return
            seq, sub.seq = sub.seq, sub.seq + 1
        body = (
            '<?xml version="1.0"?>\n<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0">'
            f"<e:property><PortMappingNumberOfEntries>{count}</PortMappingNumberOfEntries></e:property>"
            "</e:propertyset>"
        ).encode()
        threading.Thread(target=self._deliver, args=(sub.callback, sid, seq, body), daemon=True).start()

    def _deliver(self, callback: str, sid: str, seq: int, body: bytes) -> None:
        parts = urlsplit(callback)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=5)
        headers = {
            "Content-Type": 'text/xml; charset="utf-8"',
            "NT": "upnp:event",
            "NTS": "upnp:propchange",
            "SID": sid,
            "SEQ": str(seq),
        }
        try:
            conn.request("NOTIFY", parts.path or "/", body=body, headers=headers)
            conn.getresponse().read()
            with self._lock:
                self.sent += 1
        except OSError:
            pass  # an unreachable subscriber misses this event, as on a real router
        finally:
            conn.close()


def _granted(timeout_header: str) -> int:
    """What a subscriber asked for, at most MAX_SECONDS; a TIMEOUT that is not one gets the most."""
    try:
        return timeout_seconds(timeout_header, MAX_SECONDS)
    except ValueError:
        return MAX_SECONDS
