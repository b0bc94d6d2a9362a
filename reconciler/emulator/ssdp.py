"""An SSDP responder for the emulator, for discovery tests inside network namespaces only.

It answers M-SEARCH for Internet Gateway Devices with the emulator's LOCATION. It never sends
multicast itself: answers are unicast to the searcher. The profiles bend it the way real routers do:
"odd-port" answers from another source port than 1900, "unicast-only" (Eero) hears only searches
sent straight to its address, never the multicast group.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

from ..discovery import MAX_REPLY, SEARCH_TARGETS, SSDP_ADDR, parse_message

_ALSO_ANSWERED = ("ssdp:all", "upnp:rootdevice")


class SsdpResponder:
    """Answers on `host`; a `port` other than 1900 (0: a free one, for tests on loopback) hears only
    unicast searches. `boot_id` gives BOOTID.UPNP.ORG for each answer (None: the header is left out)."""

    def __init__(
        self,
        location: str,
        udn: str,
        host: str,
        mode: str = "standard",
        *,
        port: int = SSDP_ADDR[1],
        boot_id: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.location, self.udn, self.mode = location, udn, mode
        self.boot_id = boot_id
        self._stop = threading.Event()
        if mode == "unicast-only" or port != SSDP_ADDR[1]:
            self._listen = _udp((host, port))  # bound to the unicast address: no multicast arrives
        else:
            self._listen = _udp(("", SSDP_ADDR[1]))
            group = struct.pack("4s4s", socket.inet_aton(SSDP_ADDR[0]), socket.inet_aton(host))
            self._listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
        self._reply = _udp((host, 0)) if mode == "odd-port" else self._listen
        self._listen.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name="portctl-ssdp", daemon=True)

    def start(self) -> SsdpResponder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._listen.close()
        self._reply.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._listen.recvfrom(MAX_REPLY)
            except TimeoutError:
                continue
            except OSError:
                return
            target = _search_target(data)
            if target is None:
                continue
            for st in SEARCH_TARGETS if target in _ALSO_ANSWERED else (target,):
                with contextlib.suppress(OSError):
                    self._reply.sendto(self._answer(st), peer)

    @property
    def port(self) -> int:
        return int(self._listen.getsockname()[1])

    def _answer(self, st: str) -> bytes:
        boot = self.boot_id()
        return (
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nEXT:\r\n"
            f"LOCATION: {self.location}\r\nSERVER: portctl-emulator UPnP/1.1\r\n"
            f"ST: {st}\r\nUSN: {self.udn}::{st}\r\n"
            + (f"BOOTID.UPNP.ORG: {boot}\r\nCONFIGID.UPNP.ORG: 1\r\n" if boot is not None else "")
            + "\r\n"
        ).encode()


def _udp(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def _search_target(data: bytes) -> str | None:
    """The ST of an IGD M-SEARCH this responder answers, else None."""
    start, headers = parse_message(data)
    if not start.startswith("M-SEARCH * HTTP/1.1"):
        return None
    target = headers.get("st", "")
    return target if target in SEARCH_TARGETS + _ALSO_ANSWERED else None
