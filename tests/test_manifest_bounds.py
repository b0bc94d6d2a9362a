"""Manifests that would read without bound, values that validate but mean nothing, and the memo of
valid manifests: each gets a located problem and exit 1, quickly, or builds exactly what it says."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from typing import Any

import pytest

from reconciler import manifest
from reconciler.cache import Cache
from reconciler.errors import ManifestError
from reconciler.yamldoc import MAX_BYTES, MAX_DEPTH
from tests.helpers import billion_laughs, portctl, write

HEAD = "apiVersion: portctl/v1\nowner: x\nmappings:\n"
LIMIT_SECONDS = 60  # generous: a busy shared machine; without the bounds these run for minutes or forever
MEMORY_BYTES = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def validate_in_subprocess(path: str) -> subprocess.CompletedProcess[str]:
    """`portctl validate` in a child with a memory limit and a timeout, so a regression cannot hang the suite."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", path],
        capture_output=True,
        text=True,
        timeout=LIMIT_SECONDS,
        preexec_fn=_limit_memory,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), r"m\.yaml:1:\d+: the manifest expands to more than 50000 values"),
        (
            HEAD + "".join(f"  - {{name: m{i}, external_port: {1 + i % 60000}}}\n" for i in range(300_000)),
            r"m\.yaml:\d{4}:1: the manifest goes past 262144 bytes here",
        ),
    ],
    ids=["billion-laughs", "300000-mappings"],
)
def test_unbounded_manifest_is_refused_quickly_with_a_location(tmp_path: Any, text: str, message: str) -> None:
    """validate exits 1 with file:line, within the time and memory bound, and no traceback."""
    path = write(tmp_path, text, "m.yaml")
    run = validate_in_subprocess(path)
    assert run.returncode == 1, run.stderr
    assert re.search(message, run.stderr), run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [1, *a]\n", "m.yaml:1:11: the alias *a is inside the value it names"),
        ("a: &a {b: {c: *a}}\n", "m.yaml:1:15: the alias *a is inside the value it names"),
        ("[" * 5000 + "]" * 5000 + "\n", f"m.yaml:1:{MAX_DEPTH + 1}: the manifest nests deeper than {MAX_DEPTH}"),
        ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 100)), f"nests deeper than {MAX_DEPTH} levels"),
        (
            "\n".join(
                [f"a0: &a0 {'[' * 30}1{']' * 30}"]
                + [f"a{i}: &a{i} {'[' * 30}*a{i - 1}{']' * 30}" for i in range(1, 40)]
            ),
            f"nests deeper than {MAX_DEPTH} levels (through aliases)",
        ),
    ],
    ids=["recursive-list", "recursive-map", "deep-flow", "deep-block", "deep-through-aliases"],
)
def test_recursion_and_depth_are_located_problems(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """A recursive alias or deep nesting is one located problem, exit 1, not a RecursionError."""
    run = portctl(capsys, "validate", write(tmp_path, text, "m.yaml"))
    assert run.code == 1
    assert message in run.err
    assert "Traceback" not in run.err


def test_too_many_router_mappings_is_refused_before_looping_over_them(tmp_path: Any) -> None:
    """A thousand ranges of every port count against MAX_ROWS; the problem names the mapping that passes it."""
    text = HEAD + "".join(f"  - {{name: m{i}, external_port: 1-65535, protocol: both}}\n" for i in range(1000))
    run = validate_in_subprocess(write(tmp_path, text, "m.yaml"))
    assert run.returncode == 1
    assert (
        "m.yaml:4:31: $.mappings[0].external_port: the manifest declares more than 4096 router mappings" in run.stderr
    )


def test_more_than_a_thousand_mappings_is_one_short_message(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The schema's maxItems is reported as a count, not by repeating the list."""
    text = HEAD + "".join(f"  - {{name: m{i}, external_port: {2000 + i}}}\n" for i in range(1001))
    run = portctl(capsys, "validate", write(tmp_path, text, "m.yaml"))
    assert run.code == 1
    assert len(run.err.strip().splitlines()) == 1
    assert "m.yaml:4:3: $.mappings: 1001 items; at most 1000" in run.err


def test_load_reads_no_more_than_the_bound(tmp_path: Any) -> None:
    """A file past MAX_BYTES is refused with the line where it passes the bound."""
    text = HEAD + "# padding\n" * (MAX_BYTES // 10 + 100)
    with pytest.raises(ManifestError) as caught:
        manifest.load(write(tmp_path, text, "m.yaml"))
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (
        os.path.join(tmp_path, "m.yaml"),
        text.encode().count(b"\n", 0, MAX_BYTES) + 1,
    )


def test_memo_of_valid_manifests_is_keyed_by_the_exact_text() -> None:
    """A name that passed as the string "2024-01-01" does not let the date 2024-01-01 skip the schema."""
    quoted = HEAD + '  - {name: "2024-01-01", external_port: 8080}\n'
    assert [d.name for d in manifest.parse(quoted, "m.yaml").mappings] == ["2024-01-01"]
    with pytest.raises(ManifestError) as caught:
        manifest.parse(quoted.replace('"2024-01-01"', "2024-01-01"), "m.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "m.yaml:4:12: $.mappings[0].name: datetime.date(2024, 1, 1) is not of type 'string'"
    ]


def test_a_known_manifest_is_stored_again_only_once_a_day(tmp_path: str) -> None:
    """Parsing a manifest the memo knows rewrites nothing until its entry is a day old, then marks it used."""
    now = [1_000_000.0]
    memo = Cache(str(tmp_path), clock=lambda: now[0])
    text = HEAD + "  - {name: web, external_port: 8080}\n"
    manifest.parse(text, "m.yaml", memo)
    stored = memo.read()["valid_manifests"]
    assert [r["updated"] for r in stored.values()] == [now[0]]
    now[0] += manifest.MEMO_REFRESH - 1
    manifest.parse(text, "m.yaml", memo)
    assert memo.read()["valid_manifests"] == stored
    now[0] += 2
    manifest.parse(text, "m.yaml", memo)
    assert [r["updated"] for r in memo.read()["valid_manifests"].values()] == [now[0]]


def _patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


SAMPLES = ["home", "web.1", "http://192.168.1.1:5000/rootDesc.xml", "10.0.0.0/8", "27015-27030", "udp", "BOTH",
           "192.168.1.5", "permanent", "1h30m", "3600", "nginx on :80"]  # fmt: skip


def test_every_schema_pattern_means_the_same_in_python_and_in_ecmascript() -> None:
    """Each pattern ends in `(?!\\n)$`, so Python's search (where `$` also matches before a final
    newline) agrees with ECMAScript's end of input (Python's `\\Z`) on values with and without newlines."""
    patterns = _patterns(manifest.schema())
    assert len(patterns) >= 9
    for pattern in patterns:
        assert pattern.startswith("^") and pattern.endswith("(?!\\n)$") and pattern.count("$") == 1, pattern
        ecmascript = pattern[:-1] + r"\Z"
        matched = [s for s in SAMPLES if re.search(pattern, s)]
        assert matched, f"no sample matches {pattern}"
        for sample in SAMPLES:
            for value in (sample, sample + "\n", "\n" + sample, sample + "\n\n", sample.replace("1", "\n", 1)):
                assert bool(re.search(pattern, value)) == bool(re.search(ecmascript, value)), (pattern, value)
            assert not re.search(pattern, sample + "\n"), (pattern, sample)
