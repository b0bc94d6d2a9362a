"""Real miniupnpd with secure_mode=yes, as IGD v2 and as IGD v1: mappings for this host converge, and a
mapping for another host is refused before anything is written.

And real miniupnpd with secure_mode=no and its sample permission rules, which refuse with the same codes:
such a refusal is reported for its one mapping and never learned as secure mode."""

from __future__ import annotations

import os

import pytest

from reconciler.cache import Cache
from tests.helpers import write
from tests.labfixtures import IGD_VERSIONS, module_lab
from tests.routerlab import LAN_IP, SAMPLE_RULES, Lab

pytestmark = pytest.mark.router

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


secure_lab = module_lab("ps", IGD_VERSIONS, secure_mode=True)


@pytest.fixture
def empty(secure_lab: Lab) -> Lab:
    return secure_lab.empty_table()


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


# secure_mode=no, with the sample permission rules: unprivileged ports for 192.168.77.0/24 only.
ruled_lab = module_lab("pr", IGD_VERSIONS, rules=SAMPLE_RULES)


FOREIGN_ROW = (9999, "TCP", LAN_IP, 9999, "another app game server")


@pytest.fixture
def ruled(ruled_lab: Lab) -> Lab:
    """The ruled lab holding one foreign mapping (to this host, so it proves nothing about secure mode)."""
    ruled_lab.empty_table().add_foreign(FOREIGN_ROW[0], FOREIGN_ROW[1], FOREIGN_ROW[4])
    assert ruled_lab.table() == {FOREIGN_ROW}
    return ruled_lab


def failed_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith("FAILED") and f" {name} " in line)


def cached_quirks() -> str:
    """Every quirk the cache remembers, for any router, as text."""
    if not os.path.exists(str(Cache.from_env().path)):
        return ""
    return str([record.get("quirks") for record in Cache.from_env().read().get("routers", {}).values()])


TYPO = """\
apiVersion: portctl/v1
owner: alice
mappings:
  - name: web
    external_port: 8080
    internal_port: 8000
  - name: typo
    external_port: 5001
    internal_client: 10.0.0.5
"""
LAN_HOST = """\
apiVersion: portctl/v1
owner: bob
mappings:
  - name: nas
    external_port: 5002
    internal_client: 192.168.77.99
"""
PRIVILEGED = """\
apiVersion: portctl/v1
owner: carol
mappings:
  - name: web
    external_port: 8081
    internal_port: 8000
  - name: https
    external_port: 443
    internal_client: 192.168.77.99
    allow_sensitive: true
"""


def test_off_lan_client_is_refused_alone_and_lan_hosts_stay_mappable(ruled: Lab, tmp_path: str) -> None:
    """A typo'd client off the LAN fails with both causes, teaches nothing, and another owner maps a LAN host after."""
    applied = ruled.portctl("apply", write(tmp_path, TYPO), "--auto-approve", "--no-color")
    assert applied.returncode == 1
    line = failed_line(applied.stdout, "typo")
    assert "10.0.0.5 is not on this host's LAN (192.168.77.0/24)" in line
    assert "(secure mode, permission rules)" in line
    assert "Traceback" not in applied.stderr
    assert (8080, "TCP", LAN_IP, 8000) in {row[:4] for row in ruled.table()}  # the sibling was applied
    assert "secure-mode" not in cached_quirks()
    other = ruled.portctl("apply", write(tmp_path, LAN_HOST, "bob.yaml"), "--auto-approve", "--no-color")
    assert other.returncode == 0, other.stdout + other.stderr
    assert (5002, "TCP", "192.168.77.99", 5002) in {row[:4] for row in ruled.table()}
    assert FOREIGN_ROW in ruled.table()


def test_permission_rule_refusal_names_the_rules_and_teaches_nothing(ruled: Lab, tmp_path: str) -> None:
    """The sample rules refuse another LAN host's port 443: both causes are named, nothing is learned."""
    applied = ruled.portctl("apply", write(tmp_path, PRIVILEGED), "--auto-approve", "--no-color")
    assert applied.returncode == 1
    line = failed_line(applied.stdout, "https")
    assert "permission rules" in line and "secure mode" in line and "192.168.77.99" in line
    assert "Traceback" not in applied.stderr
    assert (8081, "TCP", LAN_IP, 8000) in {row[:4] for row in ruled.table()}
    assert cached_quirks() in ("", "[]", "[{}]")
    assert FOREIGN_ROW in ruled.table()
