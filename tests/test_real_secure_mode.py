"""Real miniupnpd with secure_mode=yes, as IGD v2 and as IGD v1: mappings for this host converge, and a
mapping for another host is refused before anything is written."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import require_lab
from tests.helpers import write
from tests.routerlab import LAN_IP, Lab

THIS_HOST = """\
apiVersion: portctl/v1
owner: secure
mappings:
  - name: web
    external_port: 8080
    internal_port: 8000
    description: nginx
  - name: game
    external_port: 27015
    protocol: both
"""
OTHER_HOST = THIS_HOST + "  - name: nas\n    external_port: 5001\n    internal_client: 192.168.77.99\n"


@pytest.fixture(scope="module", params=["igd2", "igd1"])
def secure_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_lab()
    igd1 = request.param == "igd1"
    lab = Lab(prefix=f"ps{os.getpid() % 1000}{'a' if igd1 else 'b'}", igd1=igd1, secure_mode=True).up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def empty(secure_lab: Lab) -> Lab:
    for port, proto, *_ in secure_lab.table():
        secure_lab.upnpc("-d", str(port), proto)
    assert secure_lab.table() == set()
    return secure_lab


def test_this_hosts_mappings_converge_and_carry_traffic(empty: Lab, tmp_path: str) -> None:
    """plan -> apply -> plan converges for mappings to the host portctl runs on, and traffic flows."""
    path = write(tmp_path, THIS_HOST)
    assert empty.portctl("plan", path).returncode == 0
    applied = empty.portctl("apply", path, "--auto-approve", "--no-color")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = empty.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert again.returncode == 0, again.stdout
    assert {(p, proto, client) for p, proto, client, _ip, _d in empty.table()} == {
        (8080, "TCP", LAN_IP),
        (27015, "TCP", LAN_IP),
        (27015, "UDP", LAN_IP),
    }
    empty.serve(8000)
    assert empty.reaches(8080)


def test_another_hosts_mapping_is_refused_before_any_write(empty: Lab, tmp_path: str) -> None:
    """The other host's mapping is the first write; the router refuses it, and nothing at all is written.

    The refusal is remembered, so the next plan reports it as a conflict without sending a write.
    """
    path = write(tmp_path, OTHER_HOST)
    applied = empty.portctl("apply", path, "--auto-approve", "--no-color")
    assert applied.returncode == 1
    assert "secure mode" in applied.stdout
    assert "Run portctl on 192.168.77.99, or turn off secure mode" in applied.stdout
    assert "Traceback" not in applied.stderr
    assert empty.table() == set()
    again = empty.portctl("apply", path, "--auto-approve", "--no-color")
    assert again.returncode == 1
    assert "! nas" in again.stdout
    assert "resolve the conflicts above; nothing was changed" in again.stderr
    assert empty.table() == set()
