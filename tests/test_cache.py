"""The cache file: shared by concurrent processes without losing writes, aged by an injected clock, and
never written by `validate`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from reconciler.cache import MAX_ENTRIES, Cache
from tests.helpers import MANIFEST, portctl, write

WRITES = 60  # per process and section; within MAX_ENTRIES, so no write is evicted for age
assert WRITES <= MAX_ENTRIES

# Each writer imports first, then waits on stdin: every process is loaded before any writes, so the
# writes overlap however slowly the processes start.
WRITER = textwrap.dedent(
    """
    import sys
    from reconciler.cache import Cache

    name, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = Cache(directory)
    sys.stdin.readline()
    for i in range(count):
        cache.put(name, f"k{i}", {"by": name, "i": i})
        cache.put("shared", f"{name}-{i % 20}", {"by": name})
    """
)


def test_processes_writing_at_once_lose_nothing(router_cache: str) -> None:
    """Three processes put 60 records each in their own section, and 20 each in a shared one, at once: all are kept."""
    names = ["agent", "apply", "plan"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, router_cache, str(WRITES)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    doc = Cache(router_cache).read()
    for name in names:
        assert sorted(doc[name]) == sorted(f"k{i}" for i in range(WRITES))
        assert all(record["by"] == name for record in doc[name].values())
    assert sorted(doc["shared"]) == sorted(f"{name}-{i}" for name in names for i in range(20))


def test_a_put_keeps_what_another_cache_object_wrote_since_it_last_read(router_cache: str) -> None:
    """Two objects on one file (two processes' views): each put re-reads, so neither overwrites the other."""
    first, second = Cache(router_cache), Cache(router_cache)
    assert first.get("tables", "r") is None
    second.put("descriptions", "http://r/", {"udn": "u"})
    first.put("tables", "r", {"total": 3})
    doc = Cache(router_cache).read()
    assert doc["descriptions"]["http://r/"]["udn"] == "u"
    assert doc["tables"]["r"]["total"] == 3


def test_records_age_by_the_injected_clock(router_cache: str) -> None:
    """A record is returned while younger than max_age on the cache's clock, and not after."""
    now = [1000.0]
    cache = Cache(router_cache, clock=lambda: now[0])
    cache.put("descriptions", "http://r/", {"udn": "u"})
    now[0] += 59
    assert cache.get("descriptions", "http://r/", max_age=60) is not None
    now[0] += 2
    assert cache.get("descriptions", "http://r/", max_age=60) is None
    assert cache.get("descriptions", "http://r/") is not None  # no age limit: still there


def test_a_cache_without_a_directory_keeps_nothing(tmp_path: str) -> None:
    """Cache(None), what a backend gets when no cache is handed in, writes no file anywhere."""
    cache = Cache(None)
    cache.put("tables", "r", {"total": 1})
    assert cache.get("tables", "r") is None
    assert cache.read() == {}


def test_validate_writes_nothing(tmp_path: str, router_cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`portctl validate` of a valid manifest, twice, leaves the cache directory empty."""
    path = write(tmp_path, MANIFEST)
    for _ in range(2):
        run = portctl(capsys, "validate", path)
        assert run.code == 0 and "valid" in run.out
    assert os.listdir(router_cache) == []
