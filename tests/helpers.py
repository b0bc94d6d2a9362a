"""Testing helpers: run the CLI in-process and read what it printed."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

import pytest

from reconciler import ownership
from reconciler.cli import main
from reconciler.emulator import EmulatorServer


@dataclass
class Run:
    code: int
    out: str
    err: str


def portctl(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(list(args))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def write(tmp_path: os.PathLike[str], text: str, name: str = "mappings.yaml") -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def snapshot(server: EmulatorServer) -> list[tuple[object, ...]]:
    """The emulator's table, for checking that nothing changed."""
    return [
        (e.external_port, e.protocol, e.internal_client, e.internal_port, e.description) for e in server.router.rows()
    ]


MANIFEST = """\
apiVersion: portctl/v1
owner: test
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    internal_client: 127.0.0.1
    description: nginx
  - name: game
    external_port: 27015-27016
    protocol: both
    internal_client: 127.0.0.1
"""


# Another client's mapping, put on an emulator before a test writes, to check it is never touched.
FOREIGN = (9999, "TCP", "192.168.1.77", 9999, "someone else's game server")


def owned_ports(server: EmulatorServer) -> set[int]:
    """External ports of the rows carrying a portctl tag."""
    return {e.external_port for e in server.router.rows() if e.description.startswith(ownership.PREFIX)}


def route_table(tmp_path: os.PathLike[str], *networks: str) -> str:
    """A file in /proc/net/route's format with a directly attached route per network, as the kernel lists them."""

    def hex_le(address: ipaddress.IPv4Address) -> str:
        return f"{struct.unpack('<L', socket.inet_aton(str(address)))[0]:08X}"

    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    for n in map(ipaddress.IPv4Network, networks):
        lines.append(f"eth0\t{hex_le(n.network_address)}\t00000000\t0001\t0\t0\t0\t{hex_le(n.netmask)}\t0\t0\t0")
    return write(tmp_path, "\n".join(lines) + "\n", "route")


def billion_laughs() -> str:
    """Ten aliases of ten aliases, nine times over: 10^10 values from a few hundred bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"
