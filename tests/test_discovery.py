"""Discovery against routers that answer SSDP oddly, inside network namespaces the test creates.

The router is portctl's emulator with an SSDP responder, run in the lab's router namespace; every
search is sent from the lab's LAN namespace, so no SSDP leaves the namespaces.
"""

from __future__ import annotations

import sys

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab

pytestmark = pytest.mark.router
ODD_PROFILES = ("ssdp-odd-port", "ssdp-unicast-only")

MANIFEST = """\
apiVersion: portctl/v1
owner: discovery
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
"""

# A multicast-only search, as clients without the unicast step send it; prints what answered.
_MULTICAST_ONLY = """
import socket, sys
from reconciler import discovery
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
for st in discovery.SEARCH_TARGETS:
    s.sendto(discovery.m_search(st), discovery.SSDP_ADDR)
try:
    print("answered", s.recvfrom(2048)[1])
except TimeoutError:
    print("silence")
"""


# portctl's emulator as the router, once per odd SSDP profile.
odd_lab = module_lab("pd", {profile: (profile[5], {"emulator": profile}) for profile in ODD_PROFILES})


def test_plan_apply_plan_through_discovery(odd_lab: routerlab.Lab, tmp_path: str) -> None:
    """With no router given, discovery finds the odd responder and the cycle converges."""
    path = write(tmp_path, MANIFEST)
    plan = odd_lab.portctl("plan", path, "--no-color", router=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert odd_lab.url in plan.stdout
    applied = odd_lab.portctl("apply", path, "--auto-approve", "--no-color", router=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = odd_lab.portctl("plan", path, "--detailed-exitcode", "--no-color", router=False)
    assert again.returncode == 0, again.stdout
    assert "Plan: 0 to add, 0 to change, 0 to remove." in again.stdout


def test_discover_lists_the_router(odd_lab: routerlab.Lab) -> None:
    """`portctl discover` shows the router's location whatever port it answers from."""
    r = odd_lab.portctl("discover", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert odd_lab.url in r.stdout


def test_unicast_only_router_ignores_multicast(odd_lab: routerlab.Lab) -> None:
    """The control: a multicast-only search gets an answer from ssdp-odd-port but silence from ssdp-unicast-only."""
    r = odd_lab.run(odd_lab.lan, sys.executable, "-c", _MULTICAST_ONLY)
    expected = "silence" if odd_lab.emulator == "ssdp-unicast-only" else "answered"
    assert r.stdout.startswith(expected), r.stdout + r.stderr
    if expected == "answered":
        assert ", 1900)" not in r.stdout  # the answer came from another port
