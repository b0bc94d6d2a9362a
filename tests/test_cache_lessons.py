"""Lessons (what a router needs, with evidence, proof and age) in the locked cache: a run saves only what
it learned or forgot, so nothing another process saved meanwhile is lost, and a forget is not undone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from reconciler import api
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer
from reconciler.quirks import Learned, Lesson, Quirk
from tests.helpers import portctl

UDN = "uuid:router-1"
DAY = 86400.0
T0 = 1_700_000_000.0


def test_two_runs_learning_about_one_router_keep_both_lessons(router_cache: str) -> None:
    """Two processes' views load the router's lessons, each learns a different need and saves: both are kept."""
    first, second = Cache(router_cache, clock=lambda: T0), Cache(router_cache, clock=lambda: T0)
    a, b = first.learned(UDN), second.learned(UDN)
    a.learn(Quirk.SAME_PORT_ONLY, "AddPortMapping answered 724", now=T0)
    first.remember(UDN, a, "Router A")
    b.learn(Quirk.NO_PRIVILEGED_PORTS, "AddPortMapping answered 729", now=T0)
    second.remember(UDN, b)
    stored = Cache(router_cache, clock=lambda: T0).learned(UDN)
    assert set(stored.quirks) == {Quirk.SAME_PORT_ONLY, Quirk.NO_PRIVILEGED_PORTS}
    assert stored.quirks[Quirk.SAME_PORT_ONLY] == Lesson("AddPortMapping answered 724", True, T0)
    assert Cache(router_cache).read()["routers"][UDN]["friendly_name"] == "Router A"


def test_a_forget_is_not_undone_by_a_run_that_loaded_before_it(router_cache: str) -> None:
    """An agent holding two lessons keeps running while `forget` drops one; when the agent next saves
    (having learned a third), the forgotten one stays forgotten and the other two are stored."""
    cache = Cache(router_cache, clock=lambda: T0)
    cache.remember(
        UDN,
        Learned(
            {
                Quirk.SECURE_MODE: Lesson("AddPortMapping answered 606", True, T0),
                Quirk.SAME_PORT_ONLY: Lesson("AddPortMapping answered 724", True, T0),
            }
        ),
    )
    agent = cache.learned(UDN)
    assert Cache(router_cache, clock=lambda: T0).forget(UDN, {Quirk.SECURE_MODE}) == [Quirk.SECURE_MODE]
    agent.learn(Quirk.NO_PRIVILEGED_PORTS, "AddPortMapping answered 729", now=T0 + 60)
    cache.remember(UDN, agent)
    assert set(cache.learned(UDN).quirks) == {Quirk.SAME_PORT_ONLY, Quirk.NO_PRIVILEGED_PORTS}


def test_a_suspicion_saved_later_does_not_replace_a_lesson_proven_meanwhile(router_cache: str) -> None:
    """One run suspects secure mode (606), another proves it; the suspicion saved last leaves the proof standing."""
    first, second = Cache(router_cache, clock=lambda: T0), Cache(router_cache, clock=lambda: T0)
    suspecting, proving = first.learned(UDN), second.learned(UDN)
    proving.learn(Quirk.SECURE_MODE, "606, and the same row for this host was accepted", now=T0, proven=True)
    second.remember(UDN, proving)
    suspecting.learn(Quirk.SECURE_MODE, "AddPortMapping answered 606", now=T0 + 1, proven=False)
    first.remember(UDN, suspecting)
    lesson = first.learned(UDN).quirks[Quirk.SECURE_MODE]
    assert (lesson.proven, lesson.evidence) == (True, "606, and the same row for this host was accepted")


def test_opposite_lease_needs_saved_by_two_runs_leave_the_newer(router_cache: str) -> None:
    """A run that learns finite-only over a permanent-only another run stored leaves one lease need, its own."""
    first, second = Cache(router_cache, clock=lambda: T0), Cache(router_cache, clock=lambda: T0)
    newer = second.learned(UDN)
    older = first.learned(UDN)
    older.learn(Quirk.PERMANENT_ONLY, "AddPortMapping answered 725", now=T0)
    first.remember(UDN, older)
    newer.learn(Quirk.FINITE_ONLY, "a permanent lease was refused", now=T0 + 5)
    second.remember(UDN, newer)
    assert set(first.learned(UDN).quirks) == {Quirk.FINITE_ONLY}


def test_lessons_age_by_the_cache_clock(router_cache: str) -> None:
    """A proven lesson loads for 29 days on the cache's clock and not at 31; a suspicion not after a day."""
    now = [T0]
    cache = Cache(router_cache, clock=lambda: now[0])
    learned = cache.learned(UDN)
    learned.learn(Quirk.SAME_PORT_ONLY, "724", now=T0)
    learned.learn(Quirk.SECURE_MODE, "606", now=T0, proven=False)
    cache.remember(UDN, learned)
    now[0] = T0 + 0.9 * DAY
    assert set(cache.learned(UDN).quirks) == {Quirk.SAME_PORT_ONLY, Quirk.SECURE_MODE}
    now[0] = T0 + 29 * DAY
    assert set(cache.learned(UDN).quirks) == {Quirk.SAME_PORT_ONLY}
    now[0] = T0 + 31 * DAY
    assert cache.learned(UDN).quirks == {}


def test_forget_keeps_what_another_process_saved_while_it_ran(
    emulator: EmulatorServer, router_cache: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`portctl forget` drops its need by a locked re-read: a lesson about the same router that another
    process saves after forget connected (and loaded the router's lessons) is kept, and so is its
    other section."""
    Cache(router_cache).remember(emulator.udn, Learned({Quirk.SECURE_MODE: Lesson("606", True, time.time())}))
    connect = api.connect

    def connect_then_another_process_writes(*args: Any, **kwargs: Any) -> Any:
        backend = connect(*args, **kwargs)
        other = Cache(router_cache)
        learned = other.learned(emulator.udn)
        learned.learn(Quirk.NO_PRIVILEGED_PORTS, "AddPortMapping answered 729", now=other.clock())
        other.remember(emulator.udn, learned)
        other.put("tables", emulator.udn, {"total": 3})
        return backend

    monkeypatch.setattr(api, "connect", connect_then_another_process_writes)
    run = portctl(capsys, "forget", "secure-mode", "--router", emulator.url)
    assert run.code == 0, run.err
    assert "Forgot what" in run.out and "secure-mode" in run.out
    cache = Cache(router_cache)
    assert set(cache.learned(emulator.udn).quirks) == {Quirk.NO_PRIVILEGED_PORTS}
    assert cache.read()["tables"][emulator.udn]["total"] == 3


def test_forget_of_an_unwritable_cache_is_an_error(
    emulator: EmulatorServer, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forget that cannot be written says so and exits 1; it does not claim to have forgotten."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("PORTCTL_CACHE_DIR", str(blocker))
    run = portctl(capsys, "forget", "--all", "--router", emulator.url)
    assert run.code == 1
    assert "cannot write the cache" in run.err and "Forgot" not in run.out


WRITES = 25
# Each learner imports first, then waits on stdin, so the processes' saves overlap.
LEARNER = textwrap.dedent(
    """
    import sys
    from reconciler.cache import Cache
    from reconciler.quirks import Quirk

    directory, names, count = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    cache = Cache(directory)
    sys.stdin.readline()
    for i in range(count):
        learned = cache.learned("uuid:shared")
        learned.learn(Quirk(names[i % len(names)]), f"run {i}", now=cache.clock())
        cache.remember("uuid:shared", learned)
    """
)


def test_processes_learning_about_one_router_at_once_lose_no_lesson(router_cache: str) -> None:
    """Two processes each learn (and save, one at a time) different needs of one router, at once: every need
    is kept, with its latest evidence."""
    groups = [
        [Quirk.SAME_PORT_ONLY, Quirk.NO_PRIVILEGED_PORTS, Quirk.WILDCARD_REMOTE_ONLY],
        [Quirk.SECURE_MODE, Quirk.NO_PORT_LISTING, Quirk.WILDCARD_EXTERNAL_ONLY],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LEARNER, router_cache, ",".join(q.value for q in group), str(WRITES)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for group in groups
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        p.stdin.close()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    stored = Cache(router_cache).learned("uuid:shared").quirks
    assert set(stored) == {q for group in groups for q in group}
    for group in groups:  # and each need with the evidence of its process's last save, not an older one
        for k, quirk in enumerate(group):
            last = max(i for i in range(WRITES) if i % len(group) == k)
            assert stored[quirk].evidence == f"run {last}"
