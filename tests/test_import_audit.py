"""import and audit, pure parts: names, selection, entries, findings, the probe's bounds, the clean plan,
and the takeover note in the plan. Lab-free."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import audit, diff, importer, manifest, ownership, render, selection
from reconciler.cache import Cache
from reconciler.errors import PortctlError
from reconciler.models import MAX_LEASE, Action, MappingKey, PortMapping, Protocol
from reconciler.ownerstore import InventoryStore
from reconciler.render import Style

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,23}")  # the schema's name pattern
TCP, UDP = Protocol.TCP, Protocol.UDP


def row(
    port: int, desc: str, client: str = "192.168.1.20", internal: int = 0, proto: Protocol = TCP, lease: int = 3600
) -> PortMapping:
    return PortMapping(MappingKey(port, proto), client, internal or port, desc, lease)


def owned(port: int, owner: str = "someone", name: str = "web") -> PortMapping:
    return row(port, ownership.describe(owner, MappingKey(port, TCP), name))


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "port", "expected"),
    [
        ("qBittorrent 4.6 (51413)", 51413, "qbittorrent-4.6-51413"),
        ("Plex Media Server", 32400, "plex-media-server-32400"),
        ("", 8080, "mapping-8080"),
        ("!!!", 8080, "mapping-8080"),
        ("NAT-PMP 9600 tcp", 9600, "nat-pmp-tcp-9600"),
        ("Ünïcödé ☃ app", 7000, "n-c-d-app-7000"),
        ("a" * 60, 65535, "a" * 18 + "-65535"),
        ("-._leading", 1, "leading-1"),
    ],
)
def test_a_name_comes_from_the_description_and_port(description: str, port: int, expected: str) -> None:
    """The name is the description slugified to the schema's pattern, without its port, then the port."""
    [name] = importer.names([row(port, description)]).values()
    assert name == expected
    assert NAME.fullmatch(name)


def test_names_are_unique_and_valid_where_rows_would_share_one() -> None:
    """Two protocols of one port, and the same description many times, still get distinct valid names."""
    rows = [row(5000, "game"), row(5000, "game", proto=UDP), row(5000, "game " + "x" * 40, proto=UDP)]
    rows += [row(p, "same very long description of an app") for p in range(40000, 40010)]
    named = importer.names(rows)
    assert len(set(named.values())) == len(rows)
    assert all(NAME.fullmatch(n) for n in named.values())
    assert named[rows[0]] == "game-5000" and named[rows[1]] == "game-5000-udp"


def test_names_do_not_depend_on_the_order_rows_come_in() -> None:
    rows = [row(5000, "game", proto=UDP), row(5000, "game")]
    assert importer.names(rows) == importer.names(list(reversed(rows)))


# -- selection -------------------------------------------------------------------------------

TABLE = [
    row(51413, "qBittorrent", proto=TCP),
    row(51413, "qBittorrent", proto=UDP),
    row(3074, "Xbox Live", client="192.168.1.30", proto=UDP),
    row(8080, "web", client="192.168.1.30"),
]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, []),
        ({"ports": ["51413/tcp"]}, ["51413/tcp"]),
        ({"ports": ["51413"]}, ["51413/tcp", "51413/udp"]),
        ({"ports": ["51413/UDP", "8080/tcp"]}, ["8080/tcp", "51413/udp"]),
        ({"clients": ["192.168.1.30"]}, ["3074/udp", "8080/tcp"]),
        ({"descriptions": ["QBIT"]}, ["51413/tcp", "51413/udp"]),
        ({"descriptions": ["^web$", "xbox"]}, ["3074/udp", "8080/tcp"]),
        ({"clients": ["192.168.1.30"], "descriptions": ["web"]}, ["8080/tcp"]),
        ({"clients": ["192.168.1.30"], "ports": ["51413"]}, []),
    ],
)
def test_selection_picks_rows_matching_every_kind_of_selector_given(
    flags: dict[str, list[str]], expected: list[str]
) -> None:
    """Each kind matches by any of its values; kinds combine by and; no selector picks nothing."""
    assert [str(r.key) for r in selection.parse(**flags).pick(TABLE)] == expected


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ({"ports": ["0/tcp"]}, "--select '0/tcp'"),
        ({"ports": ["70000"]}, "--select '70000'"),
        ({"ports": ["80/sctp"]}, "tcp or udp"),
        ({"ports": ["\uff18\uff10"]}, "--select"),  # fullwidth digits
        ({"clients": ["192.168.1"]}, "--client '192.168.1'"),
        ({"descriptions": ["("]}, "--description '('"),
    ],
)
def test_a_selector_that_cannot_be_read_is_one_message_naming_it(flags: dict[str, list[str]], said: str) -> None:
    with pytest.raises(selection.BadSelector, match=re.escape(said)):
        selection.parse(**flags)


# -- entries ---------------------------------------------------------------------------------


def test_import_leaves_out_rows_with_a_portctl_tag_and_says_why() -> None:
    """Another owner's row (or this one's) is never imported, however it is selected."""
    theirs = owned(8080)
    result = importer.build([theirs, row(8081, "app")], selection.parse(ports=["8080", "8081"]))
    assert [name for name, _ in result.entries] == ["app-8081"]
    assert [(r, "portctl owner tag" in why) for r, why in result.skipped] == [(theirs, True)]


def test_import_leaves_out_a_disabled_row_and_says_why() -> None:
    """A disabled RDP row would come back enabled (allow_sensitive, takeover): it is skipped, with why."""
    shut = replace(row(3389, "remote desktop"), enabled=False)
    result = importer.build([shut, row(8081, "app")], selection.parse(ports=["3389", "8081"]))
    assert [name for name, _ in result.entries] == ["app-8081"]
    assert [(r, "disabled" in why) for r, why in result.skipped] == [(shut, True)]
    assert "3389" not in result.text and "allow_sensitive" not in result.text


def test_imported_entries_validate_as_a_manifest_and_declare_the_rows_as_they_forward() -> None:
    """Wrapped with an owner, the entries are a valid manifest whose mappings forward as the rows do,
    each with on_conflict takeover; a sensitive one carries allow_sensitive."""
    rows = [
        row(51413, "qBittorrent", lease=0),
        row(2222, "ssh box", internal=22, lease=3590),
        row(9600, "NAT-PMP 9600 tcp", proto=UDP, lease=MAX_LEASE - 5),
    ]
    result = importer.build(rows, selection.parse(ports=["51413", "2222", "9600"]))
    m = manifest.parse(f"apiVersion: portctl/v1\nowner: me\nmappings:\n{result.text}")
    got = {
        (d.key, d.internal_client, d.internal_port, d.lease, d.on_conflict.value, d.allow_sensitive) for d in m.mappings
    }
    assert got == {
        (MappingKey(51413, TCP), "192.168.1.20", 51413, 0, "takeover", False),
        (MappingKey(2222, TCP), "192.168.1.20", 22, 3600, "takeover", True),
        (MappingKey(9600, UDP), "192.168.1.20", 9600, MAX_LEASE, "takeover", False),
    }


def test_an_entry_comment_says_what_was_found_with_control_characters_escaped() -> None:
    """A description from the network cannot break out of its comment line."""
    result = importer.build([row(7000, "evil\n- name: x\r", lease=0)], selection.parse(ports=["7000"]))
    first = result.text.splitlines()[0]
    assert first.startswith("  # found 7000/tcp -> 192.168.1.20:7000 'evil\\n- name: x\\r', permanent lease")
    assert manifest.parse(f"apiVersion: portctl/v1\nowner: me\nmappings:\n{result.text}").mappings


# -- findings --------------------------------------------------------------------------------


def kinds(result: audit.Audit) -> set[tuple[str, str]]:
    return {(f.kind, f.subject) for f in result.findings}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row(8080, "app")], {("undeclared", "8080/tcp")}),
        ([owned(8080)], set()),
        ([row(8080, "app", lease=0)], {("undeclared", "8080/tcp"), ("permanent", "8080/tcp")}),
        ([row(8080, "app", lease=MAX_LEASE - 60)], {("undeclared", "8080/tcp"), ("permanent", "8080/tcp")}),
        ([row(8080, "app", lease=86400)], {("undeclared", "8080/tcp")}),
        ([row(2222, owned(2222).description, internal=22)], {("sensitive", "2222/tcp")}),
        ([row(443, "app")], {("undeclared", "443/tcp"), ("sensitive", "443/tcp")}),
        ([row(9600, "NAT-PMP 9600 tcp")], {("undeclared", "9600/tcp"), ("made-through", "9600/tcp")}),
        ([row(9601, "PCP MAP " + "ab" * 12)], {("undeclared", "9601/tcp"), ("made-through", "9601/tcp")}),
        ([owned(p) for p in range(9000, 9004)], set()),
        ([owned(p) for p in range(9000, 9005)], {("crowded", "192.168.1.20")}),
    ],
)
def test_each_kind_of_finding_is_found_where_it_is_and_nowhere_else(
    rows: list[PortMapping], expected: set[tuple[str, str]]
) -> None:
    assert kinds(audit.audit(rows)) == expected


def test_a_disabled_row_on_a_sensitive_port_is_reported_shut_not_open() -> None:
    """RDP held by a disabled row is still a sensitive finding (one enable opens it), saying it is disabled."""
    shut = replace(row(3389, "remote desktop"), enabled=False)
    [finding] = [
        f
        for f in audit.audit([shut, row(3390, "rdp", internal=3389)]).findings
        if f.subject == "3389/tcp" and f.kind == "sensitive"
    ]
    assert "disabled" in finding.why and "is open" not in finding.why
    [open_one] = [f for f in audit.audit([row(3390, "rdp", internal=3389)]).findings if f.kind == "sensitive"]
    assert open_one.why == "RDP (port 3389) is open to the internet"


def test_a_table_near_the_listing_limit_of_one_protocol_is_a_finding() -> None:
    """96 UDP rows are near miniupnpd 2.3.1's 128; 95 TCP rows beside them are not."""
    tagged = [owned(p) for p in range(10000, 10095)]
    udp = [replace_key(owned(p), UDP) for p in range(20000, 20096)]
    found = [f for f in audit.audit(tagged + udp).findings if f.kind == "near-limit"]
    assert [(f.subject, "128" in f.why) for f in found] == [("UDP", True)]


def replace_key(r: PortMapping, proto: Protocol) -> PortMapping:
    return PortMapping(MappingKey(r.key.external_port, proto), r.internal_client, r.internal_port, r.description)


def test_the_probe_asks_each_private_lan_host_once_and_flags_every_row_to_a_silent_one() -> None:
    """Loopback, public and link-local addresses are never probed; a silent host's rows are each a finding."""
    rows = [
        owned(9000),
        row(9001, owned(9001).description, client="192.168.1.50", internal=7001),
        row(9002, owned(9002).description, client="192.168.1.50", internal=7002),
        row(9003, owned(9003).description, client="127.0.0.1"),
        row(9004, owned(9004).description, client="8.8.8.8"),
        row(9005, owned(9005).description, client="169.254.1.1"),
    ]
    asked: list[tuple[str, int]] = []

    def probe(address: str, port: int) -> bool:
        asked.append((address, port))
        return address != "192.168.1.50"

    result = audit.audit(rows, probe)
    assert sorted(asked) == [("192.168.1.20", 9000), ("192.168.1.50", 7001)]
    assert kinds(result) == {("no-answer", "9001/tcp"), ("no-answer", "9002/tcp")}


def test_the_probe_is_bounded_in_hosts_and_in_time() -> None:
    """Past MAX_PROBES hosts none is asked; a probe still running when the budget is spent gives no
    verdict (the host is listed as not probed, not as silent)."""
    rows = [row(9000 + i, owned(9000 + i).description, client=f"10.0.{i // 250}.{i % 250 + 1}") for i in range(40)]
    release = threading.Event()
    asked: list[str] = []
    now = [0.0]

    def probe(address: str, port: int) -> bool:
        asked.append(address)
        if address == "10.0.0.2":
            now[0] = 100.0  # the budget is spent while this host keeps the probe waiting
            release.wait(30)
        return True

    try:
        result = audit.audit(rows, probe, budget=10.0, clock=lambda: now[0])
        waited = release.is_set()  # still unset: the audit did not wait for the probe past its budget
    finally:
        release.set()
    assert not waited
    assert len(asked) <= audit.MAX_PROBES
    assert "10.0.0.2" in result.unprobed and "10.0.0.2" not in result.probed
    assert len(result.unprobed) >= 40 - audit.MAX_PROBES
    assert not [f for f in result.findings if f.kind == "no-answer"]


def test_tcp_answers_takes_a_refused_connection_as_an_answer() -> None:
    """A host that refuses the port is up: only silence is 'no answer'. (Loopback: a port nothing holds.)"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert audit.tcp_answers("127.0.0.1", port, timeout=5)


# -- audit --clean ---------------------------------------------------------------------------


def test_the_clean_plan_removes_the_selected_rows_and_nothing_else() -> None:
    table = [row(8080, "a"), row(8081, "b"), owned(8082)]
    plan = audit.clean_plan(table, selection.parse(ports=["8081"]))
    assert [(c.action, c.key, c.before) for c in plan.changes] == [(Action.REMOVE, MappingKey(8081, TCP), table[1])]
    assert set(plan.foreign) == {table[0], table[2]}


def test_the_clean_plan_refuses_a_selected_row_with_a_portctl_tag() -> None:
    table = [row(8080, "a"), owned(8082)]
    with pytest.raises(PortctlError, match=r"portctl owner tag.*Nothing was deleted"):
        audit.clean_plan(table, selection.parse(ports=["8080", "8082"]))


def test_the_clean_plan_refuses_a_row_the_inventory_records_for_any_owner(tmp_path: Path) -> None:
    """On a router that keeps no descriptions an owned row carries no tag: the inventory, every owner's
    records read, says it is owned. A row at a recorded key that forwards elsewhere is someone else's."""
    store = InventoryStore(Cache(str(tmp_path)), "uuid:router")
    mine, theirs, moved = row(8080, ""), row(8081, "app"), row(8082, "", client="192.168.1.99")
    store.record("homelab", mine.key, mine, "web")
    store.record("lab2", theirs.key, theirs, "game")
    store.record("homelab", moved.key, row(8082, ""), "old")
    fresh = InventoryStore(Cache(str(tmp_path)), "uuid:router")
    assert [fresh.holders(r) for r in (mine, theirs, moved)] == [("homelab",), ("lab2",), ()]
    table = [mine, theirs, moved, row(9000, "free")]
    for port, owner in ((8080, "homelab"), (8081, "lab2")):
        with pytest.raises(PortctlError, match=rf"records it as held by {owner}.*Nothing was deleted"):
            audit.clean_plan(table, selection.parse(ports=[str(port), "9000"]), recorded=fresh.holders)
    plan = audit.clean_plan(table, selection.parse(ports=["8082", "9000"]), recorded=fresh.holders)
    assert [c.key.external_port for c in plan.changes] == [8082, 9000]


@pytest.mark.parametrize(("description", "through"), [("PCP MAP " + "0f" * 12, "PCP"), ("NAT-PMP 9600 tcp", "NAT-PMP")])
def test_the_clean_plan_refuses_a_row_made_through_pcp_or_natpmp(description: str, through: str) -> None:
    """Such a row may be portctl's, made through pcp:// or natpmp:// here or on another host: nothing on
    it says whose, so it is never cleaned (it lapses unless renewed); audit still reports it."""
    table = [row(9600, description), row(8080, "a")]
    said = f"made through {through}: its owner cannot be read from the row, and it lapses by itself unless renewed"
    with pytest.raises(PortctlError, match=re.escape(said) + r"\. Nothing was deleted"):
        audit.clean_plan(table, selection.parse(ports=["9600", "8080"]))
    assert ("made-through", "9600/tcp") in kinds(audit.audit(table))


def test_the_clean_plan_of_no_selector_removes_nothing() -> None:
    assert audit.clean_plan([row(8080, "a")], selection.parse()).changes == ()


# -- the takeover, as the plan shows it --------------------------------------------------------


def test_a_takeover_says_in_the_plan_that_the_port_closes_for_a_moment() -> None:
    """Taking over a foreign row is delete then add: the plan says so before approval."""
    m = manifest.parse(
        "apiVersion: portctl/v1\nowner: me\nmappings:\n"
        "  - {name: app, external_port: 8080, internal_client: 192.168.1.20, on_conflict: takeover}\n"
    )
    plan = diff.diff(m, [row(8080, "app")])
    [change] = plan.changes
    assert change.replace and change.note == diff.TAKEOVER_NOTE
    assert "the port closes for a moment" in render.plan_text(plan, Style(False))
