"""Few round trips: the description cache, paging the table safely, and keeping the connection open.

These count requests; how long they take is the benchmark's business (bench/plan_vs_upnpc.py).
"""

from __future__ import annotations

import collections

from reconciler import api, paging
from reconciler.backends import upnp
from reconciler.backends.upnp import UpnpBackend
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from reconciler.emulator.profiles import PROFILES
from reconciler.models import Protocol
from tests.helpers import snapshot


class Requests(collections.Counter[str]):
    """Every request a backend sends, by action ("GET" for documents)."""

    def __call__(self, action: str, error: str) -> None:
        self[action] += 1


def read(server: EmulatorServer, config_id: str = "") -> tuple[Requests, int]:
    """One connect and table read as `plan` does it (config_id: as SSDP announced it): requests sent, rows read."""
    sent = Requests()
    backend = upnp.connect(server.url, cache=Cache.from_env(), on_request=sent, config_id=config_id)
    rows = api.read(backend).table
    return sent, len(rows)


def fill(router: Router, count: int, start: int, step: int = 1, protocols: tuple[str, ...] = ("TCP", "UDP")) -> None:
    for i in range(count):
        for proto in protocols:
            router.add(start + i * step, proto, "192.168.1.50", 9000, f"foreign {i}")


def test_a_warm_plan_fetches_no_descriptions(emulator: EmulatorServer) -> None:
    """The second run goes straight to the control URL: the external address, one probe, one listing per protocol."""
    fill(emulator.router, 5, 4000)
    cold, rows = read(emulator)
    assert cold["GET"] >= 2 and rows == 10
    warm, rows = read(emulator)
    assert rows == 10
    assert warm["GET"] == 0
    assert warm["GetListOfPortMappings"] == 2
    assert warm["GetGenericPortMappingEntry"] == 1
    assert sum(warm.values()) == 2 + warm["GetListOfPortMappings"]


def test_a_warm_plan_of_an_empty_table_lists_nothing(emulator: EmulatorServer) -> None:
    """A table last read empty and probed empty again is read whole by that probe: no listing is sent."""
    cold, rows = read(emulator)
    assert rows == 0 and cold["GetListOfPortMappings"] == 2
    warm, rows = read(emulator)
    assert rows == 0
    assert warm == {"GetExternalIPAddress": 1, "GetGenericPortMappingEntry": 1}
    # The probe at index 0 is what vouches for emptiness: one new row makes the next read list the table.
    fill(emulator.router, 1, 4000, protocols=("UDP",))
    before = snapshot(emulator)
    sent, rows = read(emulator)
    assert rows == 1 and sent["GetListOfPortMappings"] == 2
    assert snapshot(emulator) == before  # reading changed nothing


def test_a_changed_config_id_or_a_moved_control_url_reads_the_description_again(emulator: EmulatorServer) -> None:
    """The cache never outlives the description it was made from."""
    read(emulator)
    record = Cache.from_env().get("descriptions", emulator.url)
    assert record is not None and record["config_id"] == "1"
    assert read(emulator, config_id="1")[0]["GET"] == 0
    assert read(emulator, config_id="2")[0]["GET"] >= 2  # SSDP announced a new configId
    stale = Cache.from_env().get("descriptions", emulator.url)
    assert stale is not None
    stale["service"]["control_url"] = emulator.url.replace("/rootDesc.xml", "/ctl/moved")
    Cache.from_env().put("descriptions", emulator.url, stale)
    sent, rows = read(emulator)
    assert sent["GET"] >= 2 and rows == 0  # the 404 sent it back to the description, and the read worked
    stale = Cache.from_env().get("descriptions", emulator.url)
    assert stale is not None
    stale["service"]["service_type"] = "urn:schemas-upnp-org:service:WANPPPConnection:1"
    Cache.from_env().put("descriptions", emulator.url, stale)
    sent, rows = read(emulator)
    assert sent["GET"] >= 2 and rows == 0  # 401 for the cached service type: described again


def test_one_connection_serves_a_whole_plan(emulator: EmulatorServer) -> None:
    """The emulator keeps connections open, so a plan's requests share one TCP connection."""
    backend = api.connect(emulator.url, Cache.from_env())
    api.read(backend)
    assert isinstance(backend, UpnpBackend)
    assert [c.connections for c in backend.session._clients.values()] == [1]


def test_large_tables_are_paged_so_no_listing_crashes_miniupnpd_2_3_1() -> None:
    """300 mappings per protocol on a router that dies listing more than 128: never crashed, every row read.

    The first read goes entry by entry (nothing says where the ports lie); later reads list ranges
    cut from what the last read found, and fall back to entries when the table grew too much.
    """
    router = Router(PROFILES["miniupnpd-2.3.1"])
    with EmulatorServer(router) as server:
        fill(router, 300, 10000, step=3)
        before = snapshot(server)
        first, rows = read(server)
        assert rows == 600 and first["GetListOfPortMappings"] == 0
        warm, rows = read(server)
        pages = warm["GetListOfPortMappings"]
        assert rows == 600
        assert pages == 2 * -(-300 // paging.PAGE_TARGET)  # 5 ranges per protocol
        # One probe proves both that no range outgrew the router and that the pages held the whole table.
        assert warm["GetGenericPortMappingEntry"] == 1
        assert sum(warm.values()) == 2 + pages
        # 60 new rows crowded into one range: within the room each range leaves, still paged.
        fill(router, 60, 20000, protocols=("TCP",))
        grown, rows = read(server)
        assert rows == 660 and grown["GetListOfPortMappings"] == pages
        # 100 more: more growth than the ranges can take, so the table is read entry by entry once more.
        fill(router, 100, 30000, protocols=("TCP",))
        regrown, rows = read(server)
        assert rows == 760 and regrown["GetListOfPortMappings"] == 0
        assert router.crashes == 0
        assert set(before) <= set(snapshot(server))  # reading changed nothing


def test_the_emulated_crash_is_real() -> None:
    """The control for the test above: one listing of the whole range does kill the emulated daemon."""
    router = Router(PROFILES["miniupnpd-2.3.1"])
    with EmulatorServer(router) as server:
        fill(router, 140, 10000, protocols=("TCP",))
        backend = upnp.connect(server.url)
        backend.table._list_range(Protocol.TCP, 1, 65535)  # dropped, then retried on the emptied table
        assert router.crashes == 1 and router.rows() == []
