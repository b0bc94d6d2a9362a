"""--trace: the conversation with the router, as a person reads it, without a packet capture.

A `Tracer` is an `http.Observer`: the HTTP client (SOAP, descriptions, GENA subscriptions) and SSDP
discovery hand it each exchange once it ends, and it writes one header line (method, URL, SOAP
action or search target, status, bytes each way, milliseconds) and the two bodies, trimmed and made
printable, so a hostile or broken answer cannot drive the terminal.
"""

from __future__ import annotations

import threading
from typing import TextIO

from .. import xmlsafe
from .http import Exchange

BODY_LIMIT = 1500  # characters of each body shown; descriptions and listings can be long
PREFIX = "trace: "
# Binary datagrams (backends/pcp/traced): shown as hex, their status a result code rather than HTTP's.
DATAGRAMS = ("PCP", "NAT-PMP", "UDP")


class Tracer:
    """Writes every exchange to `stream`, one whole exchange at a time (agents call from several threads)."""

    def __init__(self, stream: TextIO, *, body_limit: int = BODY_LIMIT) -> None:
        self.stream = stream
        self.body_limit = body_limit
        self._lock = threading.Lock()

    def __call__(self, exchange: Exchange) -> None:
        text = "".join(f"{PREFIX}{line}\n" for line in lines(exchange, self.body_limit))
        with self._lock:
            self.stream.write(text)
            self.stream.flush()


def lines(x: Exchange, body_limit: int = BODY_LIMIT) -> list[str]:
    """The exchange as lines of text: a summary, then what was sent (>) and what came back (<)."""
    action = f" {xmlsafe.printable(x.action, 80)}" if x.action else ""
    ms = f"{x.seconds * 1000:.1f} ms"
    if x.status is None and x.error:
        outcome = f"no answer after {ms}: {xmlsafe.printable(x.error, 300)}"
    elif x.status is None:
        outcome = f"sent {len(x.sent)} bytes"  # a datagram: its answers, if any, are exchanges of their own
    elif x.method in DATAGRAMS:
        outcome = f"received {len(x.received)} bytes after {ms}"
    else:
        outcome = f"HTTP {x.status}, sent {len(x.sent)} bytes, received {len(x.received)} bytes in {ms}"
    if x.note:
        outcome += f"; {xmlsafe.printable(x.note, 300)}"
    out = [f"{x.method} {xmlsafe.printable(x.url, 300)}{action}: {outcome}"]
    body = _hex if x.method in DATAGRAMS else _body
    out += [f"  > {line}" for line in body(x.sent, body_limit)]
    out += [f"  < {line}" for line in body(x.received, body_limit)]
    return out


def _hex(data: bytes, limit: int) -> list[str]:
    """A binary datagram as rows of 16 bytes in hex, 4-byte words apart (the RFCs draw them so)."""
    shown = data[: limit // 2]
    rows = [" ".join(shown[i + j : i + j + 4].hex() for j in range(0, 16, 4)).strip() for i in range(0, len(shown), 16)]
    if len(data) > len(shown):
        rows.append(f"... ({len(data) - len(shown)} more bytes)")
    return rows


def _body(data: bytes, limit: int) -> list[str]:
    """`data` as printable lines, cut to `limit` characters with a note of what was left out."""
    if not data:
        return []
    text = data.decode("utf-8", "backslashreplace")
    shown = text[:limit]
    rows = [xmlsafe.printable(row, limit) for row in shown.splitlines() if row.strip()]
    if len(text) > limit:
        rows.append(f"... ({len(text) - limit} more characters)")
    return rows
