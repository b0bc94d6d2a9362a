"""--format markdown: plans, apply reports and tables for pull-request comments and job summaries.

The golden files under tests/golden/ are what the renderer prints for fixed model objects. After
changing the renderer on purpose, rewrite them and review the diff:

    PORTCTL_REGEN_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/test_markdown.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler import markdown
from reconciler.emulator import EmulatorServer
from reconciler.markdown import COMMENT_BYTES, SUMMARY_BYTES, Read, cell, plan_markdown, table_markdown
from reconciler.models import (
    Action,
    Adaptation,
    ApplyReport,
    Change,
    ChangeResult,
    Conflict,
    FieldChange,
    HeldPinhole,
    MappingKey,
    Pinhole,
    PinholeAction,
    PinholeChange,
    PinholeKey,
    PinholeResult,
    Plan,
    PortMapping,
    Protocol,
    Refusal,
    upnp_router,
)
from reconciler.quirks import Learned, Lesson, Quirk
from tests.helpers import FOREIGN, MANIFEST, portctl, snapshot, write

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
TCP, UDP = Protocol.TCP, Protocol.UDP
READ = Read(at=1_780_000_000, now=1_780_000_042)
ROUTER = upnp_router(
    "http://192.168.1.1:5000/rootDesc.xml",
    "uuid:0000-1111",
    "FRITZ!Box 7590",
    2,
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "203.0.113.7",
)


def key(port: int, protocol: Protocol = TCP) -> MappingKey:
    return MappingKey(port, protocol)


def row(port: int, client: str, to: int, description: str, lease: int = 0, protocol: Protocol = TCP) -> PortMapping:
    return PortMapping(key(port, protocol), client, to, description, lease)


def every_kind_of_row() -> Plan:
    """A plan with one of each: add, change, replace, remove, renew, sensitive, adapted, conflicts,
    kept, foreign (one made through PCP, one with hostile text), learned needs, pinholes, refusals."""
    old_web = row(8080, "192.168.1.10", 80, "pc:aaaa web nginx")
    new_web = row(8080, "192.168.1.10", 8000, "pc:aaaa web nginx")
    old_nas = row(5001, "192.168.1.20", 5001, "pc:bbbb nas")
    new_nas = row(5001, "192.168.1.21", 5001, "pc:bbbb nas")
    pinhole_key = PinholeKey("2001:db8::5", 8443, TCP)
    held = HeldPinhole("https6", Pinhole(pinhole_key, 3600), 7, 1_780_000_500.0)
    gone_key = PinholeKey("2001:db8::9", 2222, TCP, "2001:db8:1::1", 0)
    gone = HeldPinhole("old-ssh6", Pinhole(gone_key, 3600), 9, 1_780_001_000.0)
    return Plan(
        owner="homelab",
        router=ROUTER,
        changes=(
            Change(
                Action.ADD,
                "game",
                key(27015, UDP),
                None,
                row(27015, "192.168.1.30", 27015, "pc:cccc game", 0, UDP),
                "declared",
            ),
            Change(
                Action.ADD,
                "ssh",
                key(2222),
                None,
                row(2222, "192.168.1.10", 22, "pc:dddd ssh", 3600),
                "declared",
                adapted=(Adaptation("lease", 0, 3600, "finite-only"),),
            ),
            Change(
                Action.CHANGE,
                "web",
                key(8080),
                old_web,
                new_web,
                "internal_port differs",
                fields=(FieldChange("internal_port", 80, 8000),),
            ),
            Change(
                Action.CHANGE,
                "nas",
                key(5001),
                old_nas,
                new_nas,
                "internal_client differs",
                replace=True,
                fields=(FieldChange("internal_client", "192.168.1.20", "192.168.1.21"),),
            ),
            Change(
                Action.REMOVE,
                "old-vpn",
                key(1194, UDP),
                row(1194, "192.168.1.40", 1194, "pc:eeee old-vpn", 0, UDP),
                None,
                "no longer declared",
                note="it forwards to 192.168.1.40, not this host",
            ),
            Change(
                Action.RENEW,
                "plex",
                key(32400),
                row(32400, "192.168.1.50", 32400, "pc:ffff plex", 100),
                row(32400, "192.168.1.50", 32400, "pc:ffff plex", 7200),
                "lease runs out in 1m40s",
            ),
        ),
        conflicts=(
            Conflict("mc", key(25565), row(25565, "192.168.1.99", 25565, "Minecraft | @steve"), "held by another"),
            Conflict("dns", key(53, UDP), None, "the router refuses privileged ports; pick one above 1023"),
        ),
        foreign=(
            row(3074, "192.168.1.77", 3074, "Xbox Live (a game console)", 0, UDP),
            row(51413, "192.168.1.78", 51413, "PCP MAP 0123456789abcdef01234567", 7200),
            row(9999, "192.168.1.79", 9999, "evil | `rm -rf` <script>@octocat\nfixes org/repo#12 **bold**"),
        ),
        kept=(row(6000, "192.168.1.10", 6000, "pc:gggg x11"), row(6001, "192.168.1.10", 6001, "pc:hhhh vnc")),
        protected=(key(6001),),
        quirks=("needs finite leases (finite-only)", "caps listings at 20 rows (caps-listings)"),
        refusals=(
            Refusal(
                "sensitive",
                "ssh 2222/tcp exposes SSH (port 22) to the internet; set allow_sensitive: true",
                "ssh",
                key(2222),
            ),
            Refusal("conflict", "mc 25565/tcp: held by another", "mc", key(25565)),
        ),
        blocked="ssh 2222/tcp exposes SSH (port 22) to the internet; set allow_sensitive: true",
        pinholes=(
            PinholeChange(
                PinholeAction.OPEN,
                "web6",
                PinholeKey("2001:db8::5", 8080, TCP),
                None,
                Pinhole(PinholeKey("2001:db8::5", 8080, TCP), 3600),
                "declared",
            ),
            PinholeChange(
                PinholeAction.RENEW, "https6", pinhole_key, held, Pinhole(pinhole_key, 3600), "lease runs out in 8m20s"
            ),
            PinholeChange(PinholeAction.CLOSE, "old-ssh6", gone_key, gone, None, "no longer declared"),
        ),
        pinholes_through="upnp",
    )


def check_golden(name: str, text: str) -> None:
    """`text` is the golden file `name`; PORTCTL_REGEN_GOLDEN=1 rewrites the file instead."""
    path = os.path.join(GOLDEN, name)
    if os.environ.get("PORTCTL_REGEN_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    with open(path, encoding="utf-8") as f:
        assert text + "\n" == f.read()


def test_a_plan_with_every_kind_of_row_renders_as_its_golden_file() -> None:
    """Add, change, replace, remove, renew, sensitive, conflict, kept, foreign, learned need and pinholes: plan.md."""
    check_golden("plan.md", plan_markdown(every_kind_of_row(), READ))


def test_an_apply_report_renders_as_its_golden_file() -> None:
    """Done, failed and skipped writes and pinholes, over the plan they came from: apply.md."""
    plan = every_kind_of_row()
    report = ApplyReport(
        results=(
            ChangeResult(plan.changes[0], True),
            ChangeResult(plan.changes[1], False, "718 ConflictInMappingEntry", final=True),
            ChangeResult(plan.changes[4], False, "the row changed since the plan", skipped=True),
        ),
        pinholes=(PinholeResult(plan.pinholes[0], True, unique_id=12),),
        unverified="GetListOfPortMappings timed out",
    )
    check_golden("apply.md", markdown.apply_markdown(plan, report, READ))


def test_a_table_renders_as_its_golden_file() -> None:
    """show: the owner's rows, the others folded, held pinholes and what the router is known to need: show.md."""
    plan = every_kind_of_row()
    table = [row(8080, "192.168.1.10", 80, "pc:aaaa web nginx", 3000), *plan.foreign]
    learned = Learned({Quirk.PERMANENT_ONLY: Lesson("725 OnlyPermanentLeasesSupported to AddPortMapping", True, 0.0)})
    assert plan.pinholes[1].before is not None
    text = table_markdown(
        ROUTER,
        table,
        {key(8080)},
        owner="homelab",
        learned=learned,
        held=[plan.pinholes[1].before],
        read=READ,
        protocol="UPnP IGD",
    )
    check_golden("show.md", text)


def test_removals_and_replacements_get_a_warning_heading_before_any_table() -> None:
    """A plan that removes, replaces or closes says so in a heading above every table; one that only adds has none."""
    text = plan_markdown(every_kind_of_row(), READ)
    heading = "## ⚠️ This plan removes 1 mapping, replaces 1 mapping (deleted, then added) and closes 1 IPv6 pinhole"
    assert heading in text.splitlines()
    assert text.index(heading) < text.index("|")
    adds_only = Plan("o", (Change(Action.ADD, "a", key(8080), None, row(8080, "10.0.0.2", 80, "pc:x a")),), ())
    assert "⚠️" not in plan_markdown(adds_only)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a | b", "a &#124; b"),
        ("`code`", "&#96;code&#96;"),
        ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
        ("one\ntwo\r\nthree\rfour", "one<br>two<br>three<br>four"),
        ("ping @octocat and @org/team", "ping @\u200boctocat and @\u200borg/team"),
        ("see #12 and org/repo#34", "see #\u200b12 and org/repo#\u200b34"),
        (
            "**bold** _it_ ~~s~~ [link](x) \\|",
            "&#42;&#42;bold&#42;&#42; &#95;it&#95; &#126;&#126;s&#126;&#126; &#91;link&#93;(x) &#92;&#124;",
        ),
        ("allow_sensitive: true", "allow_sensitive: true"),
        ("&lt; stays text", "&amp;lt; stays text"),
        ("bell\x07", "bell\ufffd"),
        ("x" * 400, "x" * 299 + "…"),
    ],
)
def test_cell_text_is_escaped(text: str, expected: str) -> None:
    """Text from a manifest or a router is inert in a table cell: no delimiter, markup, line break or mention."""
    assert cell(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://evil.example/x", "see https:\u200b//evil.example/x"),
        ("HTTP://192.168.1.1:5000/rootDesc.xml", "HTTP:\u200b//192.168.1.1:5000/rootDesc.xml"),
        ("ftp://files.example", "ftp:\u200b//files.example"),
        ("(www.evil.example)", "(www\u200b.evil.example)"),
        ("http://www.evil.example", "http:\u200b//www\u200b.evil.example"),
        ("mail me@evil.example", "mail me@\u200bevil.example"),
        ("mailto:me@evil.example", "mailto:me@\u200bevil.example"),
        ("odd a@.evil.example", "odd a@\u200b.evil.example"),
        ("host:port 10.0.0.1:80 and time 12:30", "host:port 10.0.0.1:80 and time 12:30"),
    ],
)
def test_cell_text_makes_no_autolink(text: str, expected: str) -> None:
    """GitHub links a scheme's `://`, `www.` and `a@b.c` in plain text: a zero-width space where its
    rules look (right after the colon, after `www`, after `@`) stops each, and the text reads the same."""
    assert cell(text) == expected
    assert expected.replace("\u200b", "") == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("costs $5, or $x^2$ and $$y$$", "costs &#36;5, or &#36;x^2&#36; and &#36;&#36;y&#36;&#36;"),
        ("fixed in GH-123, see gh-7", "fixed in GH-\u200b123, see gh-\u200b7"),
        ("GH-x and 8080/tcp 123456", "GH-x and 8080/tcp 123456"),
        (
            "commit 0123456789abcdef0123456789abcdef01234567",
            "commit 012345\u200b6789ab\u200bcdef01\u200b234567\u200b89abcd\u200bef0123\u200b4567",
        ),
        ("a word of 7 hex letters: deadbee", "a word of 7 hex letters: deadbe\u200be"),
    ],
)
def test_cell_text_makes_no_math_issue_or_commit_link(text: str, expected: str) -> None:
    """`$…$` is math on GitHub, `GH-123` links an issue and 7 to 40 hex digits a commit: `$` as an entity, and a
    zero-width space after `GH-` and after every 6th digit of a hex run, leave nothing to render or link."""
    got = cell(text)
    assert got == expected
    assert got.replace("\u200b", "").replace("&#36;", "$") == text
    assert not re.search(r"[0-9A-Fa-f]{7}", got) and not re.search(r"(?i)gh-\d", got) and "$" not in got


def test_a_hostile_description_stays_in_its_cell() -> None:
    """The foreign row with `|`, backticks, `<`, a newline and an @mention is one table row of four cells."""
    text = plan_markdown(every_kind_of_row(), READ)
    [line] = [line for line in text.splitlines() if line.startswith("| `9999/tcp`")]
    assert line.count("|") == 5
    assert "<script" not in line and "`rm" not in line and not re.search(r"@\w", line)


def big_plan(rows: int) -> Plan:
    """A plan removing, adding and seeing `rows` mappings each."""
    removes = tuple(
        Change(Action.REMOVE, f"old{i}", key(10000 + i), row(10000 + i, "10.0.0.2", 80, f"pc:x old{i}"), None, "gone")
        for i in range(rows)
    )
    adds = tuple(
        Change(Action.ADD, f"new{i}", key(20000 + i), None, row(20000 + i, "10.0.0.3", 80, f"pc:y new{i}"), "declared")
        for i in range(rows)
    )
    foreign = tuple(row(40000 + i, "10.0.0.9", 80, f"someone's app number {i}") for i in range(rows))
    return Plan("big", removes + adds, foreign, router=ROUTER)


def table_rows(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("| ") and not line.startswith("| |"))


def left_out(text: str) -> int:
    return sum(int(n) for n in re.findall(r"^\*… (\d+) more \w+(?: \w+)? left out", text, re.M))


@pytest.mark.parametrize("limit", [COMMENT_BYTES, SUMMARY_BYTES])
def test_a_plan_of_thousands_of_rows_is_cut_to_the_limit(limit: int) -> None:
    """Under the limit with the final newline, every row either shown or counted as left out, removals kept first."""
    plan = big_plan(6000)
    text = plan_markdown(plan, READ, max_bytes=limit)
    assert len(text.encode()) + 1 <= limit
    header_rows = sum(1 for line in text.splitlines() if line.startswith("| mapping |"))
    assert table_rows(text) - header_rows + left_out(text) == 3 * 6000
    assert text.startswith("**Plan: 6000 to add, 0 to change, 6000 to remove.**")
    assert "## ⚠️ This plan removes 6000 mappings" in text
    assert "| **remove** | old0 |" in text
    assert "Foreign mappings, left alone (6000)" in text


def test_a_plan_that_fits_is_not_cut() -> None:
    """A small plan shows every row and no cut line."""
    text = plan_markdown(big_plan(20), READ)
    assert left_out(text) == 0 and "left out" not in text
    assert table_rows(text) - 1 == 60  # the foreign table's header starts with "| mapping"


def test_a_limit_too_small_to_hold_the_summary_is_refused() -> None:
    """max_bytes below what is never cut is a ValueError, not a document over the limit."""
    with pytest.raises(ValueError, match="max_bytes must be at least"):
        plan_markdown(big_plan(1), max_bytes=1000)


# -- through the CLI, on the emulator ----------------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "show"])
def test_markdown_through_the_cli(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """plan and show --format markdown exit as --format text does and print the router, the rows and the foreign one."""
    emulator.router.add(*FOREIGN)
    path = write(tmp_path, MANIFEST)
    base = [command, path, "--router", emulator.url]
    text = portctl(capsys, *base)
    md = portctl(capsys, *base, "--format", "markdown")
    assert (md.code, md.err) == (text.code, text.err) == (0, "")
    assert f"at {cell(emulator.url)}" in md.out  # the URL, inert: a zero-width space after its colon
    assert "| `9999/tcp` | 192.168.1.77:9999 |" in md.out and "someone else's game server" in md.out
    assert "<details>" in md.out
    if command == "plan":
        assert md.out.startswith("**Plan: 5 to add, 0 to change, 0 to remove.**")
        assert "| add | web | `8080/tcp` | 127.0.0.1:80 |" in md.out


def test_a_conflicting_plan_in_markdown_exits_as_text_does(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A foreign row on a declared port: exit 1 in both formats, the conflict flagged in the markdown."""
    emulator.router.add(8080, "TCP", "192.168.1.77", 80, "someone's web server")
    path = write(tmp_path, MANIFEST)
    base = ["plan", path, "--router", emulator.url]
    text = portctl(capsys, *base)
    md = portctl(capsys, *base, "--format", "markdown")
    assert md.code == text.code == 1
    assert "> [!CAUTION]\n> 1 conflict: nothing is written until resolved." in md.out
    assert "| ❗ | web | `8080/tcp` | 192.168.1.77:80 someone's web server |" in md.out


def test_apply_in_markdown_prints_the_plan_and_its_result(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply --format markdown: one document, the result first, every write done, the foreign row left alone."""
    emulator.router.add(*FOREIGN)
    before = [r for r in snapshot(emulator) if r[0] == FOREIGN[0]]
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--format", "markdown")
    assert run.code == 0
    assert run.out.startswith("**Apply: 5 done, 0 failed.**")
    assert run.out.count("| done |") == 5
    assert [r for r in snapshot(emulator) if r[0] == FOREIGN[0]] == before


def test_the_cli_cuts_markdown_to_the_bytes_it_is_given(
    tmp_path: Path, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-bytes reaches the renderer: a table of 400 foreign rows fits 64 KB whole and is cut to 9000
    bytes, saying how many rows were left out; a limit too small for what is never cut is a usage error."""
    for port in range(20000, 20400):
        emulator.router.add(port, "TCP", "192.168.1.77", port, f"someone else's service number {port}")
    path = write(tmp_path, MANIFEST)
    base = ["plan", path, "--router", emulator.url, "--format", "markdown"]
    whole = portctl(capsys, *base)
    assert whole.code == 0 and "left out" not in whole.out
    cut = portctl(capsys, *base, "--max-bytes", "9000")
    assert cut.code == 0 and len(cut.out.encode()) <= 9000 and left_out(cut.out) > 0
    with pytest.raises(SystemExit) as refused:
        portctl(capsys, *base, "--max-bytes", "100")
    assert refused.value.code == 2 and "needs at least 8192 bytes" in capsys.readouterr().err
