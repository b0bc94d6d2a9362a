"""IPv6 pinholes through PCP (RFC 6887): a MAP for this host's own IPv6 address, sent over IPv6 to
the gateway, opens the router's firewall to that port. There is no NAT in it: the external address
and port are the internal ones, and miniupnpd answers them so.

Each pinhole's nonce comes from the local secret and the pinhole's key (`nonce.pinhole_nonce`). A MAP
with lifetime 0 closes it; a router holding it under another client's nonce refuses that
(NOT_AUTHORIZED), and it stays open: it was never ours to close.

miniupnpd 2.3.1 (nftables, measured on the lab) forgets a pinhole's nonce when a MAP extends it in
place, and then refuses every close (NOT_AUTHORIZED) until it lapses. So every MAP that opens or
renews one closes this nonce's pinhole first and maps it afresh, which keeps it closable (and finds
it again after the inventory was lost); connections already through it stay up (the forward chain
accepts established traffic). Where that close is refused, the pinhole is another client's (or was
extended in place before): nothing more is sent (PinholeHeldElsewhere). A MAP then would extend it in
place, reset its lifetime and make the router forget that client's nonce, so that it could no longer
close its own pinhole.

A MAP sent more than once (its first answer was late or lost) may have reached the router twice, and
the second extended the first in place: the pinhole is open but has lost its nonce. So an opening MAP
that took more than one send is checked by closing it: where that succeeds it is mapped again (at most
ROUNDS times); where it is refused (NOT_AUTHORIZED) it is open as asked but cannot be closed before its
lease ends, and `Opened.warning` says so.

What a router grants is compared with what was asked, because approved is what gets written: a
lifetime longer than the lease asked for (miniupnpd grants at least its `min_lifetime`, 120 s by
default) or another port is closed again at once and refused. A shorter lifetime is kept and
recorded: the pinhole is renewed against it. PCP on miniupnpd opens a pinhole to every remote host
(it takes no filter for pinholes), so a pinhole with a remote host or port is refused before any
write (`reconciler.pinholes`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ... import urls
from ...errors import PinholeHeldElsewhere, RouterTimeout, RouterUnreachable
from ...models import Pinhole, PinholeKey
from ...models import Protocol as Transport
from ..base import Opened
from . import nonce, wire
from .backend import RETRANSMIT_FLOOR, Exchanger
from .client import DEADLINE, Answer, Client, udp_socket
from .errors import MapRefused, ResultError

ROUNDS = 3  # opening MAPs tried where each took more than one send (and was closed again to keep it closable)


def connect(
    location: str,
    *,
    source: str,
    secret_directory: str,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
) -> PcpPinholes:
    """Pinholes to `source` through the PCP server at `pcp://[IPv6]:PORT` (a link-local one with its zone,
    `pcp://[fe80::1%25eth0]`), spoken to from `source`.
    Sends nothing until a pinhole is opened or shut."""
    parts = urlsplit(location)
    if parts.scheme != "pcp" or not parts.hostname:
        raise RouterUnreachable(f"{location!r} is not a pcp:// URL of a gateway")
    gateway = urls.host(location)  # a link-local gateway with its zone: `fe80::1%eth0`
    deadline = max(timeout or DEADLINE, RETRANSMIT_FLOOR)  # as the mapping backend: at least three sends
    factory = functools.partial(udp_socket, source=source)
    client = Client(
        gateway, port=parts.port or wire.PORT, deadline=deadline, socket_factory=factory, clock=clock or time.monotonic
    )
    return PcpPinholes(client, nonce.load_secret(secret_directory))


class PcpPinholes:
    """The PinholeOpener over one PCP client bound to this host's address `source`."""

    def __init__(self, client: Exchanger, secret: bytes) -> None:
        self.client = client
        self.secret = secret

    @property
    def source(self) -> str:
        return str(self.client.local_address)

    def close(self) -> None:
        self.client.close()

    def open(self, pinhole: Pinhole) -> Opened:
        """Close it first where it is ours (our nonce), then map it afresh: see the module's docstring.
        PinholeHeldElsewhere, and nothing more sent, where the router refuses that close."""
        key = pinhole.key
        try:
            self.shut(key)
        except PinholeHeldElsewhere as exc:
            raise PinholeHeldElsewhere(
                "PCP MAP",
                exc.code,
                f"PCP pinhole {key} is held by another client (or extended in place before): not opened; the "
                "router refused this nonce's close (NOT_AUTHORIZED), and a MAP would extend it in place and "
                "make the router forget its holder's nonce. It lapses when its holder stops renewing it; "
                "then apply again, or declare another port",
            ) from exc
        for _ in range(ROUNDS):
            answer = self._exchange(key, pinhole.lease)
            lifetime = self._granted(key, pinhole.lease, answer.response)
            if answer.sends == 1:
                return Opened(0, lifetime)
            # Sent again: the router may have taken the second MAP as an extension, forgetting the nonce.
            try:
                self.shut(key)
            except PinholeHeldElsewhere:
                return Opened(
                    0,
                    lifetime,
                    warning=f"open as asked, but its MAP was sent {answer.sends} times and the router took one "
                    "as an extension in place, forgetting its nonce: it cannot be closed or renewed before its "
                    f"lease ends ({lifetime} s)",
                )
        raise RouterTimeout(
            f"PCP pinhole {key}: each of {ROUNDS} MAPs was sent more than once (answers late or lost) and was "
            "closed again to keep it closable: not opened; apply again"
        )

    def renew(self, pinhole: Pinhole) -> Opened:
        return self.open(pinhole)

    def shut(self, key: PinholeKey) -> None:
        try:
            self._map(key, 0)
        except MapRefused as exc:
            if exc.code == wire.Result.NO_RESOURCES:
                # What miniupnpd answers a close of a pinhole it no longer holds (lapsed, or the
                # router restarted): closed already.
                return
            if exc.code == wire.Result.NOT_AUTHORIZED:
                raise PinholeHeldElsewhere(
                    "PCP MAP",
                    exc.code,
                    f"PCP refused to close pinhole {key} (NOT_AUTHORIZED): the router holds it under another "
                    "nonce, as miniupnpd does once a pinhole was extended in place or another client made it. "
                    "It stays open until its lease runs out; it is no longer recorded as this owner's",
                ) from exc
            raise

    def _granted(self, key: PinholeKey, lease: int, response: wire.PcpResponse) -> int:
        """The lifetime granted; a grant broader than asked (another port, a longer lifetime) is closed
        again and refused."""
        assert response.map is not None  # a SUCCESS answer to MAP carries its body (wire checks)
        port, lifetime = response.map.external_port, response.lifetime
        if port != key.internal_port or lifetime > lease:
            self.shut(key)
            granted = f"port {port}" if port != key.internal_port else f"a lifetime of {lifetime} s"
            raise MapRefused(
                "PCP",
                0,
                f"PCP granted pinhole {key} {granted}, more than the plan asked for (lease {lease} s); "
                f"closed again. "
                + (f"Ask for a lease of at least {lifetime} s" if port == key.internal_port else "Use UPnP for it"),
            )
        return lifetime

    def _map(self, key: PinholeKey, lifetime: int) -> wire.PcpResponse:
        return self._exchange(key, lifetime).response

    def _exchange(self, key: PinholeKey, lifetime: int) -> Answer[wire.PcpResponse]:
        """One MAP for `key` answered with SUCCESS, and how many sends it took; MapRefused otherwise."""
        own = self.client.local_address
        if str(own) != key.internal_client:
            # The socket is bound to the pinhole's address; the kernel chose otherwise only if it was not ours.
            why = f"pinhole {key}: requests leave from {own}, and PCP opens a pinhole for its sender alone"
            raise MapRefused("PCP", 0, why)
        request = wire.MapRequest(
            nonce=nonce.pinhole_nonce(self.secret, str(key)),
            protocol=wire.IpProtocol.TCP if key.protocol is Transport.TCP else wire.IpProtocol.UDP,
            internal_port=key.internal_port,
            client_address=own,
            lifetime=lifetime,
            suggested_external_port=key.internal_port,
        )
        answer = self.client.pcp(request)
        try:
            answer.response.raise_for_result()
        except ResultError as exc:
            what = "close" if lifetime == 0 else "open"
            raise MapRefused("PCP", exc.code, f"PCP refused to {what} pinhole {key}: {exc.code} {exc.name}") from exc
        return answer
