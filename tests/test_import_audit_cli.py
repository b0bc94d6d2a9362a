"""`portctl import` and `portctl audit` on the emulator: what they print, exit with, write and delete.

Foreign rows' internal clients are 192.168.1.x: these tests pass --no-probe to audit, so nothing is
sent to them (network safety); the probe itself is tested on the real-router lab and in pure tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from reconciler import api, ownership
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from reconciler.models import MappingKey, Protocol
from reconciler.ownerstore import InventoryStore
from tests.helpers import portctl, snapshot, write

FOREIGN = [
    (51413, "TCP", "192.168.1.20", 51413, "qBittorrent (51413)", 0),
    (51413, "UDP", "192.168.1.20", 51413, "qBittorrent (51413)", 3600),
    (3074, "UDP", "192.168.1.30", 3074, "Xbox Live", 3600),
    (2222, "TCP", "192.168.1.30", 22, "ssh box", 3600),
]
OWNER = "importer"


@pytest.fixture
def router() -> Iterator[EmulatorServer]:
    server = EmulatorServer(Router(igd_version=2)).start()
    for port, proto, client, internal, desc, lease in FOREIGN:
        server.router.add(port, proto, client, internal, desc, lease)
    yield server
    server.stop()


def wrap(tmp_path: os.PathLike[str], entries: str, name: str = "imported.yaml") -> str:
    return write(tmp_path, f"apiVersion: portctl/v1\nowner: {OWNER}\nmappings:\n{entries}", name)


def rows_but(server: EmulatorServer, *ports: tuple[int, str]) -> list[tuple[object, ...]]:
    return [r for r in snapshot(server) if (r[0], r[1]) not in ports]


def test_import_without_a_selector_selects_nothing_and_says_how(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run = portctl(capsys, "import", "--router", router.url)
    assert run.code == 1 and run.out == ""
    assert "selects nothing" in run.err and "--select PORT/PROTO" in run.err and "Traceback" not in run.err


def test_imported_entries_validate_then_apply_takes_over_exactly_the_selected_rows(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]
) -> None:
    """import --description prints entries that validate once wrapped with an owner; the plan shows
    each as a takeover that closes the port for a moment; apply re-tags exactly those rows with their
    forwarding unchanged, every other row is byte-identical, and a second plan has no changes."""
    before = snapshot(router)
    run = portctl(capsys, "import", "--description", "qbittorrent", "--router", router.url)
    assert run.code == 0, run.err
    assert snapshot(router) == before  # import only reads
    path = wrap(tmp_path, run.out)
    assert portctl(capsys, "validate", path).code == 0

    plan = portctl(capsys, "plan", path, "--router", router.url, "--no-color")
    assert plan.code == 0, plan.err
    assert plan.out.count("-/+") == 2 and plan.out.count("the port closes for a moment") == 2
    assert "Plan: 0 to add, 2 to change, 0 to remove." in plan.out

    assert portctl(capsys, "apply", path, "--router", router.url, "--auto-approve").code == 0
    taken = {(r[0], r[1]): r for r in snapshot(router) if r[0] == 51413}
    for proto in ("TCP", "UDP"):
        _, _, client, internal, desc = taken[(51413, proto)]
        assert (client, internal) == ("192.168.1.20", 51413)
        assert ownership.claim(OWNER, MappingKey(51413, Protocol(proto)), str(desc)) is not None
    assert rows_but(router, (51413, "TCP"), (51413, "UDP")) == [r for r in before if r[0] != 51413]
    again = portctl(capsys, "plan", path, "--router", router.url, "--detailed-exitcode")
    assert again.code == 0, again.out


def test_import_writes_a_file_and_never_overwrites_one_unless_forced(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]
) -> None:
    out = os.path.join(tmp_path, "entries.yaml")
    first = portctl(capsys, "import", "--select", "2222/tcp", "--out", out, "--router", router.url)
    assert first.code == 0 and "Wrote 1 entry" in first.out
    with open(out) as f:
        text = f.read()
    assert "allow_sensitive: true" in text and "on_conflict: takeover" in text
    assert portctl(capsys, "validate", wrap(tmp_path, text)).code == 0

    write(tmp_path, "mine\n", "entries.yaml")
    refused = portctl(capsys, "import", "--select", "3074/udp", "--out", out, "--router", router.url)
    assert refused.code == 1 and "exists; not overwriting it" in refused.err
    with open(out) as f:
        assert f.read() == "mine\n"
    forced = portctl(capsys, "import", "--select", "3074/udp", "--out", out, "--force", "--router", router.url)
    assert forced.code == 0
    with open(out) as f:
        assert "name: xbox-live-3074" in f.read()


def test_import_never_takes_a_row_with_a_portctl_tag(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    key = MappingKey(8080, Protocol.TCP)
    router.router.add(8080, "TCP", "192.168.1.40", 80, ownership.describe("someone-else", key, "web"), 3600)
    run = portctl(capsys, "import", "--select", "8080/tcp", "--router", router.url)
    assert run.code == 1 and run.out == ""
    assert "skipped 8080/tcp" in run.err and "portctl owner tag" in run.err


def test_import_never_takes_a_disabled_row_and_audit_says_it_is_shut(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disabled RDP row is skipped by import (an entry would open it at the next apply); audit's
    sensitive finding for it says it is disabled, not open; the table is as it was."""
    router.router.add(3389, "TCP", "192.168.1.20", 3389, "remote desktop", 3600, enabled=False)
    before = snapshot(router)
    run = portctl(capsys, "import", "--select", "3389/tcp", "--select", "3074/udp", "--router", router.url)
    assert run.code == 0, run.err
    assert "skipped 3389/tcp" in run.err and "disabled" in run.err
    assert "3389" not in run.out and "allow_sensitive" not in run.out and "name: xbox-live-3074" in run.out

    doc = json.loads(portctl(capsys, "audit", "--no-probe", "--json", "--router", router.url).out)
    [rdp] = [f for f in doc["findings"] if (f["kind"], f["subject"]) == ("sensitive", "3389/tcp")]
    assert "disabled" in rdp["why"] and "is open" not in rdp["why"]
    assert rdp["rows"][0]["enabled"] is False
    assert snapshot(router) == before
    assert [e.enabled for e in router.router.rows() if e.external_port == 3389] == [False]


def test_import_and_audit_say_a_router_that_cannot_list_cannot_be_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Over PCP the table cannot be listed: one message, exit 1."""
    with EmulatorServer(Router(), pcp_port=0) as server:
        for args in (["import", "--select", "80"], ["audit"], ["audit", "--clean", "--select", "80", "--auto-approve"]):
            run = portctl(capsys, *args, "--router", server.pcp_url())
            assert run.code == 1, args
            assert "cannot list it" in run.err and "Traceback" not in run.err


def test_audit_reports_findings_as_json_and_exits_2_with_detailed_exitcode(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run = portctl(capsys, "audit", "--no-probe", "--json", "--detailed-exitcode", "--router", router.url)
    assert run.code == 2, run.err
    doc = json.loads(run.out)
    found = {(f["kind"], f["subject"]) for f in doc["findings"]}
    assert found == {
        ("undeclared", "51413/tcp"),
        ("undeclared", "51413/udp"),
        ("undeclared", "3074/udp"),
        ("undeclared", "2222/tcp"),
        ("permanent", "51413/tcp"),
        ("sensitive", "2222/tcp"),
    }
    assert doc["counts"]["undeclared"] == 4 and doc["probed"] == []


def test_audit_of_a_clean_table_exits_0_even_with_detailed_exitcode(capsys: pytest.CaptureFixture[str]) -> None:
    with EmulatorServer(Router()) as server:
        run = portctl(capsys, "audit", "--no-probe", "--detailed-exitcode", "--router", server.url)
    assert run.code == 0 and "nothing deserves a look" in run.out


def test_audit_clean_deletes_only_the_selected_row(router: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(router)
    run = portctl(capsys, "audit", "--clean", "--select", "3074/udp", "--auto-approve", "--router", router.url)
    assert run.code == 0, run.err
    assert "will delete 1 mapping(s), and nothing else" in run.out and "3074/udp" in run.out
    assert snapshot(router) == [r for r in before if r[:2] != (3074, "UDP")]


def test_audit_clean_refuses_without_a_selector_approval_or_on_a_tagged_row(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """No selector, no terminal to approve on, or a row some portctl owner holds: nothing is deleted."""
    key = MappingKey(8080, Protocol.TCP)
    router.router.add(8080, "TCP", "192.168.1.40", 80, ownership.describe("someone-else", key, "web"), 3600)
    before = snapshot(router)
    cases = [
        (["--auto-approve"], "deletes only what you select"),
        (["--select", "3074/udp"], "without a terminal"),
        (["--select", "3074/udp", "--select", "8080/tcp", "--auto-approve"], "portctl owner tag"),
    ]
    for extra, said in cases:
        run = portctl(capsys, "audit", "--clean", *extra, "--router", router.url)
        assert run.code == 1 and said in run.err, (extra, run.err)
        assert snapshot(router) == before


def test_audit_clean_refuses_a_row_the_inventory_records_as_owned(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row owned through the local inventory carries no tag: audit --clean reads every owner's records
    for the router and deletes nothing; every row stays byte-identical."""
    cache = Cache.from_env()
    identity = api.connect(router.url, cache).info.identity
    store = InventoryStore(cache, identity)
    for owner, port, proto, name in (("homelab", 3074, "UDP", "xbox"), ("lab2", 2222, "TCP", "ssh")):
        [held] = [
            m for m in api.connect(router.url, cache).list_mappings() if m.key == MappingKey(port, Protocol(proto))
        ]
        store.record(owner, held.key, held, name)
    before = snapshot(router)
    for select, owner in (("3074/udp", "homelab"), ("2222/tcp", "lab2")):
        run = portctl(capsys, "audit", "--clean", "--select", select, "--auto-approve", "--router", router.url)
        assert run.code == 1, run.out
        assert f"{select}" in run.err and f"records it as held by {owner}" in run.err
        assert "Nothing was deleted" in run.err and "Traceback" not in run.err
        assert snapshot(router) == before


def test_audit_clean_refuses_when_the_inventory_cannot_be_read(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str], router_cache: str
) -> None:
    """What this host owns is not known for certain: one message naming the file, nothing deleted."""
    write(router_cache, "{not json", "inventory.json")
    before = snapshot(router)
    run = portctl(capsys, "audit", "--clean", "--select", "3074/udp", "--auto-approve", "--router", router.url)
    assert run.code == 1 and "inventory.json" in run.err and "Nothing was deleted" in run.err, run.err
    assert "Traceback" not in run.err and snapshot(router) == before


def test_audit_clean_refuses_rows_made_through_pcp_and_natpmp_that_audit_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: os.PathLike[str]
) -> None:
    """portctl's own mappings made through pcp:// and natpmp:// show in the UPnP table untagged
    (`PCP MAP <nonce>`, `NAT-PMP <port> <proto>`): audit reports them, audit --clean refuses them."""
    m = "apiVersion: portctl/v1\nowner: homelab\ndefaults: {{lease: 10m, internal_client: auto}}\nmappings:\n{}"
    web = "  - {name: web, external_port: 18080, internal_port: 8080, protocol: tcp}\n"
    game = "  - {name: game, external_port: 27015, internal_port: 7015, protocol: udp}\n"
    with EmulatorServer(Router(), pcp_port=0) as server:
        for scheme, rows in (("pcp", web), ("natpmp", game)):
            path = write(tmp_path, m.format(rows), f"{scheme}.yaml")
            applied = portctl(capsys, "apply", path, "--router", server.pcp_url(scheme), "--auto-approve")
            assert applied.code == 0, applied.err
        before = snapshot(server)
        assert len(before) == 2
        run = portctl(
            capsys,
            "audit",
            "--clean",
            "--select",
            "18080",
            "--select",
            "27015",
            "--auto-approve",
            "--router",
            server.url,
        )
        assert run.code == 1, run.out
        for key, through in (("18080/tcp", "PCP"), ("27015/udp", "NAT-PMP")):
            assert f"{key} '{through}" in run.err and f"made through {through}: its owner cannot be read" in run.err
        assert "lapses by itself unless renewed" in run.err and "Nothing was deleted" in run.err
        assert snapshot(server) == before
        doc = json.loads(portctl(capsys, "audit", "--no-probe", "--json", "--router", server.url).out)
        made = {f["subject"] for f in doc["findings"] if f["kind"] == "made-through"}
        assert made == {"18080/tcp", "27015/udp"}


def test_audit_selectors_without_clean_are_refused(router: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    run = portctl(capsys, "audit", "--select", "3074/udp", "--router", router.url)
    assert run.code == 1 and "add --clean" in run.err


def test_audit_in_markdown_has_a_row_per_finding_and_exits_as_text_does(
    router: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format markdown: the summary first, one table row per finding and mapping, foreign text inert
    (a description pinging @someone does not, nor does its URL make a link), and the same exit code as text."""
    router.router.add(4000, "TCP", "192.168.1.40", 4000, "ping @octocat | <b>tables</b> www.x.example/y", 3600)
    base = ["audit", "--no-probe", "--detailed-exitcode", "--router", router.url]
    text = portctl(capsys, *base)
    md = portctl(capsys, *base, "--format", "markdown")
    assert md.code == text.code == 2
    assert md.out.startswith("**Audit of 5 mappings: 7 findings.**")
    assert "| sensitive | `2222/tcp` | 192.168.1.30:22 | ssh box |" in md.out
    rows = [line for line in md.out.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 7
    hostile = next(line for line in rows if "4000/tcp" in line)
    assert "@\u200boctocat" in hostile and "&#124;" in hostile and "<b>" not in hostile
    assert "www\u200b.x.example/y" in hostile
    assert hostile.count(" | ") == 4  # still five cells
