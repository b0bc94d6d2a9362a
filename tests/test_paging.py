"""Reading a big table in pages: a page that comes back full, or cut short by the router, is never taken as complete."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from reconciler import ownership, quirks
from reconciler.cache import Cache
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.models import MappingKey, Protocol
from tests.helpers import portctl, snapshot, write

CLIENT = "127.0.0.1"
BOTH = """\
apiVersion: portctl/v1
owner: paging
mappings:
  - {name: keep, external_port: 20000, internal_client: 127.0.0.1}
  - {name: gone, external_port: 20001, internal_client: 127.0.0.1}
"""
ONE = "\n".join(BOTH.splitlines()[:-1]) + "\n"


def foreign(router: Router, ports: range) -> None:
    for port in ports:
        router.add(port, "TCP", "192.168.1.50", port, f"another app {port}")


def owned(router: Router) -> None:
    for port, name in ((20000, "keep"), (20001, "gone")):
        router.add(port, "TCP", CLIENT, port, ownership.describe("paging", MappingKey(port, Protocol.TCP), name))


@pytest.fixture
def served() -> Iterator[list[EmulatorServer]]:
    servers: list[EmulatorServer] = []
    yield servers
    for s in servers:
        s.stop()


def test_reshuffled_table_past_the_cap_still_prunes_exactly_the_undeclared_row(
    tmp_path: str, capsys: pytest.CaptureFixture[str], served: list[EmulatorServer]
) -> None:
    """Rows moved so one cached range holds 130 (miniupnpd answers the 128 newest): the owned row is still pruned."""
    router = Router(PROFILES["miniupnpd-2.3.1"])
    server = EmulatorServer(router).start()
    served.append(server)
    foreign(router, range(10000, 10064))
    owned(router)
    foreign(router, range(40000, 40064))
    path = write(tmp_path, BOTH)
    first = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode")
    assert first.code == 0, first.out + first.err  # read entry by entry; where the ports lie is now cached
    assert Cache.from_env().get("tables", server.udn) is not None
    # Another app moves its 64 rows from the 40000s to 128 new ones in the owned rows' range.
    for port in range(40000, 40064):
        router.remove(port, "TCP")
    foreign(router, range(21000, 21128))
    before = [r for r in snapshot(server) if r[0] != 20001]
    write(tmp_path, ONE)
    plan = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
    assert plan.code == 2, plan.out + plan.err
    assert "Plan: 0 to add, 0 to change, 1 to remove." in plan.out
    assert router.calls["GetListOfPortMappings"] > 0  # read by pages, not entry by entry
    applied = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
    assert applied.code == 0, applied.out + applied.err
    assert snapshot(server) == before
    assert router.crashes == 0


def test_a_router_capping_listings_below_the_ask_is_caught_and_learned(
    tmp_path: str, capsys: pytest.CaptureFixture[str], served: list[EmulatorServer]
) -> None:
    """A router answering at most 50 rows is caught by the table's size; the cap is remembered and later pages split."""
    router = Router(replace(PROFILES["spec"], list_cap=50))
    server = EmulatorServer(router).start()
    served.append(server)
    owned(router)
    foreign(router, range(21000, 21060))
    before = [r for r in snapshot(server) if r[0] != 20001]
    path = write(tmp_path, ONE)
    plan = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
    assert plan.code == 2, plan.out + plan.err
    assert "Plan: 0 to add, 0 to change, 1 to remove." in plan.out
    learned = Cache.from_env().learned(server.udn)
    assert quirks.Quirk.CAPS_LISTINGS in learned and learned.list_cap == 50
    applied = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
    assert applied.code == 0, applied.out + applied.err
    assert snapshot(server) == before
    generic = router.calls["GetGenericPortMappingEntry"]
    again = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
    assert again.code == 0, again.out + again.err
    # One size check, at the size apply's read-back proved: no entry-by-entry read, no second probe.
    assert router.calls["GetGenericPortMappingEntry"] - generic == 1


def test_a_cap_the_router_starts_after_the_size_was_cached_is_still_caught(
    tmp_path: str, capsys: pytest.CaptureFixture[str], served: list[EmulatorServer]
) -> None:
    """A warm plan trusts its one probe only when the pages add up to it: 50-row pages of 61 rows are caught."""
    router = Router(PROFILES["spec"])
    server = EmulatorServer(router).start()
    served.append(server)
    owned(router)
    foreign(router, range(21000, 21060))
    path = write(tmp_path, ONE)
    first = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
    assert first.code == 2, first.out + first.err
    cached = Cache.from_env().get("tables", server.udn)
    assert cached is not None and cached["total"] == 62
    router.profile = replace(router.profile, list_cap=50)  # a firmware that now cuts pages short, unseen so far
    plan = portctl(capsys, "plan", path, "--router", server.url, "--detailed-exitcode", "--no-color")
    assert plan.code == 2, plan.out + plan.err
    assert "Plan: 0 to add, 0 to change, 1 to remove." in plan.out
    learned = Cache.from_env().learned(server.udn)
    assert quirks.Quirk.CAPS_LISTINGS in learned and learned.list_cap == 50
