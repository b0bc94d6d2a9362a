from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from tests.labfixtures import IGD_VERSIONS, module_lab
from tests.labfixtures import require_lab as require_lab  # still importable from here, where it used to live


@pytest.fixture(autouse=True)
def router_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test starts knowing nothing about any router: its own empty quirk cache."""
    path = str(tmp_path_factory.mktemp("cache"))
    monkeypatch.setenv("PORTCTL_CACHE_DIR", path)
    # Emulators in this process share two busy CPUs with everything else CI runs: a request may wait
    # seconds for its turn. Tests about timeouts pass their own.
    monkeypatch.setenv("PORTCTL_TIMEOUT", "30")
    return path


def _loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) and address else address
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def datagrams_stay_on_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Network safety: code run in the test process sends datagrams (SSDP, PCP, NAT-PMP) to loopback
    only. The real-router tests send theirs from processes run inside the lab's namespaces."""
    sendto, send = socket.socket.sendto, socket.socket.send

    def checked_sendto(self: socket.socket, data: Any, *rest: Any) -> int:
        if self.type == socket.SOCK_DGRAM and not _loopback(rest[-1]):
            raise AssertionError(f"a test sent a datagram to {rest[-1]!r}, off this host")
        return sendto(self, data, *rest)

    def checked_send(self: socket.socket, data: Any, *rest: Any) -> int:
        if self.type == socket.SOCK_DGRAM and not _loopback(self.getpeername()):
            raise AssertionError(f"a test sent a datagram to {self.getpeername()!r}, off this host")
        return send(self, data, *rest)

    monkeypatch.setattr(socket.socket, "sendto", checked_sendto)
    monkeypatch.setattr(socket.socket, "send", checked_send)


@pytest.fixture
def cache(router_cache: str) -> Cache:
    """The test's cache, as the CLI makes it: the same file the in-process commands use."""
    return Cache(router_cache)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A spec-following IGD v2 on loopback."""
    with EmulatorServer(Router(igd_version=2)) as server:
        yield server


@pytest.fixture
def emulator_v1() -> Iterator[EmulatorServer]:
    """The same, as IGD v1 (no GetListOfPortMappings: the table is read entry by entry)."""
    with EmulatorServer(Router(igd_version=1)) as server:
        yield server


# Real miniupnpd in fresh network namespaces, as IGD v2 and again forced to IGD v1.
lab = module_lab("pt", IGD_VERSIONS)
