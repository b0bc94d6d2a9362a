"""Failures of PCP and NAT-PMP exchanges, as part of portctl's tree (reconciler.errors).

RouterError
├── RouterTimeout               (reconciler.errors) no matching answer by the deadline
├── RouterProtocolError
│   └── MalformedAnswer         a datagram that is no valid answer to the request, and why
├── UnsupportedVersion          the server does not speak PCP version 2: use NAT-PMP
├── ResultError                 a well-formed answer with a result code other than SUCCESS
└── UpnpActionError             (reconciler.errors)
    └── RouterRefused           (reconciler.errors)
        └── MapRefused          refused, or granted another external port than asked (released)
PortctlError
└── NoRecords                   what was granted cannot be kept beside the cache
"""

from __future__ import annotations

from reconciler.errors import PortctlError, RouterError, RouterProtocolError, RouterRefused


class MalformedAnswer(RouterProtocolError):
    """A datagram that cannot be read as an answer to the request sent; `reason` says what was wrong."""

    def __init__(self, protocol: str, reason: str) -> None:
        super().__init__(f"{protocol} answer rejected: {reason}")
        self.protocol = protocol
        self.reason = reason


class UnsupportedVersion(RouterError):
    """The server answered a PCP version 2 request in another version, or with UNSUPP_VERSION.

    `server_version` is the version its answer carried: 0 is a NAT-PMP-only server. Either way the
    caller should speak NAT-PMP to it.
    """

    def __init__(self, server_version: int) -> None:
        if server_version == 0:
            what = "speaks only NAT-PMP"
        elif server_version == 2:
            what = "answered UNSUPP_VERSION to PCP version 2"
        else:
            what = f"speaks PCP version {server_version}, not 2"
        super().__init__(f"the gateway {what}: use NAT-PMP")
        self.server_version = server_version


class ResultError(RouterError):
    """The server refused a request with a result code; `retry_after` is the lifetime it gave, in
    seconds (RFC 6887 section 7.4: how long the refusal is likely to last)."""

    def __init__(self, protocol: str, operation: str, code: int, name: str, retry_after: int = 0) -> None:
        super().__init__(f"{protocol} {operation} failed: {code} {name}")
        self.protocol = protocol
        self.operation = operation
        self.code = code
        self.name = name
        self.retry_after = retry_after


class MapRefused(RouterRefused):
    """The router would not hold the mapping as asked: it refused it with a result code, or granted
    another external port (released again at once). Final for this mapping: the plan's on_conflict
    decides what to ask for instead."""

    def __init__(self, protocol: str, code: int, message: str, *, stop: bool = False) -> None:
        super().__init__(f"{protocol} MAP", code, message, stop=stop)
        self.args = (message,)


class NoRecords(PortctlError):
    """What the router granted cannot be kept (no cache directory, or it cannot be written): without
    it portctl cannot tell what it holds on a router that lists nothing."""
