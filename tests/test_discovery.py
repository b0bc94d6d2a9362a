"""Discovery against routers that answer SSDP oddly, inside network namespaces the test creates.

The router is portctl's emulator with an SSDP responder, run in the lab's router namespace; every
search is sent from the lab's LAN namespace, so no SSDP leaves the namespaces.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from reconciler import discovery
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


def test_discover_trace_shows_each_search_and_each_answer(odd_lab: routerlab.Lab) -> None:
    """`portctl discover --trace`: every M-SEARCH sent (unicast to the gateway, then multicast), and each
    answer with the address it came from, its time and the LOCATION followed."""
    import re

    r = odd_lab.portctl("discover", "--timeout", "2", "--trace")
    assert r.returncode == 0, r.stdout + r.stderr
    sent = re.findall(r"^trace: M-SEARCH udp://(\S+) (\S+): sent (\d+) bytes$", r.stderr, re.M)
    gateway = f"{routerlab.ROUTER_LAN_IP}:1900"
    assert [(to, target) for to, target, _ in sent] == [
        (to, target) for to in (gateway, "239.255.255.250:1900") for target in discovery.SEARCH_TARGETS
    ]
    assert all(int(size) == len(discovery.m_search(target)) for _, target, size in sent)
    answers = re.findall(
        r"^trace: M-SEARCH udp://([\d.]+):(\d+) (\S+): HTTP 200, sent 0 bytes, received \d+ bytes in [\d.]+ ms; "
        r"LOCATION (\S+)$",
        r.stderr,
        re.M,
    )
    assert answers, r.stderr
    assert {(host, location) for host, _port, _st, location in answers} == {(routerlab.ROUTER_LAN_IP, odd_lab.url)}
    assert all(target in discovery.SEARCH_TARGETS for _h, _p, target, _l in answers)
    assert f"trace: GET {odd_lab.url}: HTTP 200" in r.stderr  # and the description that followed
    assert "trace:" not in r.stdout


def test_plan_trace_shows_the_search_that_found_the_router(odd_lab: routerlab.Lab, tmp_path: str) -> None:
    """With no router given, `plan --trace` shows the M-SEARCH that found it (the cache is empty:
    nothing remembered the router's location), then the SOAP conversation."""
    r = odd_lab.portctl("plan", write(tmp_path, MANIFEST), "--trace", "--no-color", router=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"trace: M-SEARCH udp://{routerlab.ROUTER_LAN_IP}:1900 " in r.stderr
    assert f"LOCATION {odd_lab.url}" in r.stderr
    assert "trace: POST " in r.stderr and "GetExternalIPAddress" in r.stderr


def test_discover_and_show_give_the_routers_bootid(odd_lab: routerlab.Lab) -> None:
    """The responder's BOOTID.UPNP.ORG is in `discover` and in `show`, text and JSON, with the boot moment."""
    found = odd_lab.portctl("discover", "--timeout", "2", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    assert [r["boot_id"] for r in json.loads(found.stdout)] == [1]
    assert ", BOOTID 1" in odd_lab.portctl("discover", "--timeout", "2").stdout
    shown = odd_lab.portctl("show", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    boot = json.loads(shown.stdout)["boot"]
    assert boot["boot_id"] == 1 and boot["uptime_seconds"] >= 0 and boot["since"].endswith("Z"), boot
    text = odd_lab.portctl("show").stdout
    assert re.search(r"^Booted: up \w+, since \S+Z, BOOTID 1$", text, re.M), text
