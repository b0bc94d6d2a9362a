"""Every kind of bad input gets one clear message, exit 1, and leaves the router's table as it was."""

from __future__ import annotations

import pytest

from reconciler.emulator import EmulatorServer
from tests.helpers import FOREIGN, MANIFEST, portctl, snapshot, write

BAD_MANIFESTS = [
    # (manifest text, what the message must say)
    ("apiVersion: portctl/v1\nowner: x\nmappings: [\n", "mappings.yaml:4:1: invalid YAML"),
    (
        "apiVersion: portctl/v1\nowner: x\ncolour: red\nmappings: []\n",
        "mappings.yaml:3:1: $.colour: unknown key 'colour'",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - name: a\n    external_port: 70000\n",
        "mappings.yaml:5:20: $.mappings[0].external_port: 70000 is greater than the maximum of 65535",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - name: a\n    external_port: 0\n",
        "$.mappings[0].external_port: 0 is less than the minimum of 1",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - name: a\n    external_port: [80]\n",
        "$.mappings[0].external_port: [80] is not a port 1-65535 or a range",
    ),
    ("apiVersion: portctl/v1\nowner: x\nprune: yes\nmappings: []\n", "$.prune: 'yes' is not of type 'boolean'"),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n"
        "  - {name: a, external_port: 1}\n  - {name: a, external_port: 2}\n",
        "mappings.yaml:5:12: $.mappings[1].name: duplicate name 'a'",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n"
        "  - {name: a, external_port: 80}\n  - {name: b, external_port: 79-81}\n",
        "$.mappings[1].external_port: external port 80/tcp is also declared by 'a'",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 80, lease: soon}\n",
        "$.mappings[0].lease: 'soon' is not seconds, a duration such as 90m or 1h30m, or permanent",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 80-89, internal_port: 80-85}\n",
        "internal_port '80-85' covers 6 ports but external_port '80-89' covers 10",
    ),
    ("apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 22:22}\n", "'22:22' is not a port"),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 80, internal_client: 10.0.0.300}\n",
        "'10.0.0.300' is not an IPv4 address or auto",
    ),
    ("apiVersion: portctl/v1\nmappings: []\n", "$: 'owner' is a required property"),
    ("owner: x\nowner: y\napiVersion: portctl/v1\nmappings: []\n", "mappings.yaml:2:1: $: duplicate key 'owner'"),
    ("", "the manifest is empty"),
    # Values that passed the schema's `$`-anchored patterns with a final newline: they built no rows
    # (so prune deleted the live mapping) or crashed after validation.
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n"
        "  - name: a\n    external_port: 8080\n    protocol: |\n      udp\n",
        "mappings.yaml:6:15: $.mappings[0].protocol: 'udp\\n' is not tcp, udp or both",
    ),
    (
        'apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 8080, lease: "90m\\n"}\n',
        "mappings.yaml:4:43: $.mappings[0].lease: '90m\\n' is not seconds, a duration",
    ),
    (
        'apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: "8000-8001\\n"}\n',
        "mappings.yaml:4:30: $.mappings[0].external_port: '8000-8001\\n' is not a port 1-65535 or a range",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - name: |\n      a\n    external_port: 8080\n",
        "mappings.yaml:4:11: $.mappings[0].name: 'a\\n' is not 1-24 letters",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\ndefaults:\n  lease: |\n    permanent\nmappings:\n"
        "  - {name: a, external_port: 8080}\n",
        "mappings.yaml:4:10: $.defaults.lease: 'permanent\\n' is not seconds",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 8080.0}\n",
        "$.mappings[0].external_port: 8080.0 is not a port 1-65535 or a range",
    ),
    (
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 8080, lease: 3600.0}\n",
        "$.mappings[0].lease: 3600.0 is not seconds",
    ),
    (
        'apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: !!int "\u0668\u0660\u0668\u0660"}\n',
        "mappings.yaml:4:30: $.mappings[0].external_port: '\u0668\u0660\u0668\u0660' is not a valid !!int",
    ),
    (
        'apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: !!int "\u00b2"}\n',
        "'\u00b2' is not a valid !!int",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_MANIFESTS)
def test_bad_manifest_is_reported_and_changes_nothing(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, text: str, message: str
) -> None:
    """validate, plan and apply all refuse a bad manifest with its located message; the table is untouched."""
    emulator.router.add(9000, "TCP", "192.168.1.50", 9000, "someone else")
    before = snapshot(emulator)
    path = write(tmp_path, text)
    for command in (
        ["validate", path],
        ["plan", path, "--router", emulator.url],
        ["apply", path, "--router", emulator.url, "--auto-approve"],
    ):
        run = portctl(capsys, *command)
        assert run.code == 1
        assert message in run.err
        assert "Traceback" not in run.err
    assert snapshot(emulator) == before
    assert emulator.router.calls["AddPortMapping"] == emulator.router.calls["DeletePortMapping"] == 0


def test_every_problem_is_listed_not_just_the_first(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """validate reports all problems at once, in file order."""
    path = write(
        tmp_path,
        "apiVersion: portctl/v1\nowner: x\nmappings:\n  - {name: a, external_port: 70000}\n"
        "  - {name: b, external_port: 2000, protocol: icmp}\n",
    )
    run = portctl(capsys, "validate", path)
    lines = run.err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: ") and "mappings[0].external_port" in lines[0]
    assert "$.mappings[1].protocol: 'icmp' is not tcp, udp or both" in lines[1]


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest that does not exist is named in the message."""
    run = portctl(capsys, "validate", "/nonexistent/m.yaml")
    assert run.code == 1
    assert "/nonexistent/m.yaml: cannot read manifest" in run.err


def test_unreachable_router(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A router URL that refuses connections is one message naming it."""
    run = portctl(
        capsys, "plan", write(tmp_path, MANIFEST), "--router", "http://127.0.0.1:9/rootDesc.xml", "--timeout", "2"
    )
    assert run.code == 1
    assert "cannot reach router at http://127.0.0.1:9/rootDesc.xml: connection refused" in run.err


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1/rootDesc.xml", "Invalid IPv6 URL"),
        ("pcp://[fe80::1", "Invalid IPv6 URL"),
        ("natpmp://192.168.1.1:99999", "Port out of range 0-65535"),
        ("http://:5000/rootDesc.xml", "it names no host"),
    ],
)
def test_a_url_no_router_can_have_is_one_message(
    tmp_path: str, capsys: pytest.CaptureFixture[str], url: str, why: str
) -> None:
    """From --router: one line naming the URL and why, exit 1; from router.url: the same at its file:line."""
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", url)
    assert (run.code, run.err) == (1, f"error: {url!r} is not a router URL: {why}\n")
    text = MANIFEST.replace("mappings:", f"router:\n  url: '{url}'\nmappings:", 1)
    run = portctl(capsys, "validate", write(tmp_path, text))
    assert run.code == 1 and f"$.router.url: {url!r} is not a router URL: {why}" in run.err, run.err
    assert "Traceback" not in run.err


HOSTILE_DESCRIPTIONS = [
    (b"<root><device>", "is not well-formed XML"),
    (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><root>&b;</root>',
        "contains a DTD or entities; refused",
    ),
    (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>',
        "contains a DTD or entities; refused",
    ),
    (b"<root>" + b"<x>" * 10 + b"a" * (2 << 20) + b"</root>", "larger than 1048576 bytes; refused"),
    (
        b'<root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceType>urn:schemas-upnp-org:device:MediaServer:1'
        b"</deviceType></device></root>",
        "is a urn:schemas-upnp-org:device:MediaServer:1 without a WANIPConnection",
    ),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE_DESCRIPTIONS)
def test_broken_or_hostile_description(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, body: bytes, message: str
) -> None:
    """A description that is malformed, carries entities, is huge or is no IGD: one message, no writes."""
    emulator.overrides["/rootDesc.xml"] = (200, body)
    run = portctl(capsys, "apply", write(tmp_path, MANIFEST), "--router", emulator.url, "--auto-approve")
    assert run.code == 1
    assert message in run.err
    assert emulator.router.calls["AddPortMapping"] == 0


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"<html>Internal error</html>", "GetExternalIPAddress failed: HTTP 500 without a UPnP error code"),
        (200, b"not xml at all", "malformed answer from the router"),
        (
            200,
            b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            b"</s:Body></s:Envelope>",
            "malformed answer from the router",
        ),
    ],
)
def test_malformed_soap_answers(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, status: int, body: bytes, message: str
) -> None:
    """A control URL that answers garbage is one message naming the action, never a traceback."""
    emulator.overrides["/ctl/IPConn"] = (status, body)
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url)
    assert run.code == 1
    assert message in run.err
    assert "Traceback" not in run.err


def test_soap_fault_names_action_and_code_and_next_apply_finishes(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """A fault on one write is reported with action, code and meaning; the rest apply; a rerun converges."""
    path = write(tmp_path, MANIFEST)
    emulator.router.fail_next("AddPortMapping", 718)
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 1
    assert "AddPortMapping failed: 718 ConflictInMappingEntry" in run.out
    assert "Apply: 4 done, 1 failed." in run.out
    run = portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve", "--no-color")
    assert run.code == 0
    assert "Plan: 1 to add, 0 to change, 0 to remove." in run.out
    assert portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode").code == 0


def test_apply_without_terminal_or_approval_changes_nothing(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no terminal to ask on and no --auto-approve, apply refuses before any write."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    run = portctl(capsys, "apply", write(tmp_path, MANIFEST), "--router", emulator.url)
    assert run.code == 1
    assert "pass --auto-approve" in run.err
    assert snapshot(emulator) == []


def test_a_protocol_written_as_a_block_scalar_does_not_prune_the_live_mapping(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """`protocol: |` then `udp` reads as 'udp\\n': refused with its line, and the owned UDP mapping stays."""
    emulator.router.add(*FOREIGN)
    text = "apiVersion: portctl/v1\nowner: test\nmappings:\n  - name: game\n    external_port: 27015\n"
    good = write(tmp_path, text + "    protocol: udp\n    internal_client: 127.0.0.1\n")
    assert portctl(capsys, "apply", good, "--router", emulator.url, "--auto-approve").code == 0
    before = snapshot(emulator)
    assert [(row[0], row[1]) for row in before if row[0] == 27015] == [(27015, "UDP")]
    block = write(tmp_path, text + "    protocol: |\n      udp\n    internal_client: 127.0.0.1\n")
    for command in (
        ["plan", block, "--router", emulator.url],
        ["apply", block, "--router", emulator.url, "--auto-approve"],
    ):
        run = portctl(capsys, *command)
        assert run.code == 1
        assert "mappings.yaml:6:15: $.mappings[0].protocol: 'udp\\n' is not tcp, udp or both" in run.err
    assert snapshot(emulator) == before
    assert emulator.router.calls["DeletePortMapping"] == 0
