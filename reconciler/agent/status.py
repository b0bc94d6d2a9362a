"""The agent's status, shaped like a Flux object's: conditions with reasons, revisions, inventory.

Written by the loop, read by the HTTP listener's threads; every access holds the lock. The reasons
below are the one vocabulary of the agent's conditions, log lines and metrics.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

# Condition types
READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
DRIFTED = "Drifted"  # owned rows changed or gone behind the agent's back, left as they are (drift: warn)
# Reasons
SUCCEEDED = "ReconciliationSucceeded"
PROGRESSING = "Progressing"
ROUTER_UNREACHABLE = "RouterUnreachable"
ROUTER_ERROR = "RouterError"
LOCKED = "Locked"  # another portctl held the router's lock for the whole wait
SOURCE_FETCH_FAILED = "SourceFetchFailed"
VERIFICATION_FAILED = "VerificationFailed"
VALIDATION_FAILED = "ValidationFailed"
PLAN_BLOCKED = "PlanBlocked"
APPLY_FAILED = "ApplyFailed"
SUSPENDED = "Suspended"
SOURCE_SETTLING = "SourceSettling"  # the local manifest is still being written; the last good one stays
INTERNAL_ERROR = "InternalError"  # a bug in portctl; the log has the traceback
CONFLICT = "Conflict"  # a declared mapping's port is held by a foreign mapping
ROUTER_RESTARTED = "RouterRestarted"  # the pass converged a router that had restarted (its table restored)
DRIFT_DETECTED = "DriftDetected"  # the pass applied the rest and left drift of warn mappings unwritten
NO_DRIFT = "NoDrift"
DUPLICATE_OWNER = "DuplicateOwner"  # two followed manifests declare one owner: neither is applied
REASONS = frozenset(
    {
        SUCCEEDED, PROGRESSING, ROUTER_UNREACHABLE, ROUTER_ERROR, LOCKED, SOURCE_FETCH_FAILED, VERIFICATION_FAILED,
        VALIDATION_FAILED, PLAN_BLOCKED, APPLY_FAILED, SUSPENDED, SOURCE_SETTLING, INTERNAL_ERROR, CONFLICT,
        ROUTER_RESTARTED, DRIFT_DETECTED, NO_DRIFT, DUPLICATE_OWNER,
    }
)  # fmt: skip
SUSPENDED_MESSAGE = "reconciliation is suspended; drift is not healed"
RESULTS_KEPT = 10


def stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown", as in Kubernetes
    reason: str
    message: str
    lastTransitionTime: str


@dataclass(frozen=True)
class InventoryEntry:
    """An owned mapping the router holds, as of the last read."""

    name: str
    mapping: str  # "8443/tcp"
    target: str  # "192.168.1.10:443"
    expires: float | None  # wall-clock time; None for a permanent lease

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mapping": self.mapping,
            "target": self.target,
            "leaseExpiry": stamp(self.expires) if self.expires else None,
        }


@dataclass(frozen=True)
class Result:
    """One reconcile, as the status and the log report it."""

    started: float  # wall clock
    duration: float
    result: str  # "unchanged", "changed" or "failed"
    revision: str
    reason: str
    message: str
    changes: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()  # drift of warn mappings left unwritten, in words

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["started"] = stamp(self.started)
        doc["duration"] = round(self.duration, 3)
        doc["changes"] = list(self.changes)
        doc["drift"] = list(self.drift)
        return doc


@dataclass(frozen=True)
class Section:
    """One followed manifest, as the last pass left it: what is in force, what happened, what it owns."""

    file: str
    owner: str  # "" until the file has loaded once
    applied: str  # the revision in force ("" for none)
    attempted: str  # the newest revision seen
    result: str  # "unchanged", "changed" or "failed"; "" before its first pass
    ready: str  # "True", "False" or "Unknown"
    reason: str
    message: str
    changes: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()
    inventory: tuple[InventoryEntry, ...] = ()

    def to_json(self, since: str) -> dict[str, Any]:
        return {
            "file": self.file,
            "owner": self.owner,
            "lastAppliedRevision": self.applied,
            "lastAttemptedRevision": self.attempted,
            "result": self.result,
            "reason": self.reason,
            "message": self.message,
            "changes": list(self.changes),
            "drift": list(self.drift),
            "conditions": [asdict(Condition(READY, self.ready, self.reason, self.message, since))],
            "inventory": [e.to_json() for e in self.inventory],
        }


class Status:
    """Written by the loop through the methods below, read by the listener's threads; both hold the lock.

    A suspended agent is not ready, whatever the pass that was under way when it was suspended
    concluded: Ready and Reconciling read False (Suspended) until it is resumed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock  # for how long ago the last success was
        self._wall = wall  # for the stamps people read
        self._conditions: dict[str, Condition] = {}
        self._last_applied_revision = ""
        self._last_attempted_revision = ""
        self._last_success = 0.0  # wall clock of the last reconcile that converged the router
        self._last_success_at: float | None = None  # ... and the same moment on `clock`
        self._router = ""
        # The router's boot as last read, and the restarts noticed (lastRestartCause: why it was one).
        self._boot: dict[str, Any] = {
            "since": None, "bootId": None, "source": "", "restarts": 0, "lastRestart": None, "lastRestartCause": "",
        }  # fmt: skip
        self._suspended: Condition | None = None  # the Ready condition while suspended
        self._inventory: tuple[InventoryEntry, ...] = ()
        self._sections: tuple[Section, ...] = ()
        self._section_since: dict[str, tuple[str, str]] = {}  # file -> (its Ready status, since when)
        self._problems: dict[str, tuple[str, str]] = {}  # step between passes -> (reason, message)
        self._results: collections.deque[Result] = collections.deque(maxlen=RESULTS_KEPT)
        self.set(READY, "Unknown", PROGRESSING, "no reconcile has run yet")

    # -- writers (the loop) ----------------------------------------------------------------

    def set(self, kind: str, status: str, reason: str, message: str) -> None:
        """Set a condition; its transition time moves only when its status does."""
        with self._lock:
            old = self._conditions.get(kind)
            since = old.lastTransitionTime if old and old.status == status else stamp(self._wall())
            self._conditions[kind] = Condition(kind, status, reason, message, since)

    def suspend(self) -> bool:
        """Stop counting as ready until resume(); False when already suspended."""
        with self._lock:
            if self._suspended is not None:
                return False
            old = self._conditions.get(READY)
            since = old.lastTransitionTime if old and old.status == "False" else stamp(self._wall())
            self._suspended = Condition(READY, "False", SUSPENDED, SUSPENDED_MESSAGE, since)
            return True

    def resume(self) -> bool:
        """False when it was not suspended."""
        with self._lock:
            was, self._suspended = self._suspended, None
            return was is not None

    def attempted(self, revision: str) -> None:
        with self._lock:
            self._last_attempted_revision = revision

    def succeeded(self, revision: str) -> float:
        """A pass converged the router to `revision`; returns the wall-clock stamp it recorded."""
        with self._lock:
            self._last_applied_revision = revision
            self._last_success = self._wall()
            self._last_success_at = self._clock()
            return self._last_success

    def connected(self, router: str) -> None:
        with self._lock:
            self._router = router

    def booted(self, since: float | None, boot_id: int | None, source: str) -> None:
        """The router's boot as last read: since when (wall clock; None: it does not say) and its id."""
        with self._lock:
            self._boot.update(since=stamp(since) if since is not None else None, bootId=boot_id, source=source)

    def restarted(self, why: str) -> None:
        with self._lock:
            self._boot.update(lastRestart=stamp(self._wall()), lastRestartCause=why)
            self._boot["restarts"] += 1

    def take_inventory(self, entries: tuple[InventoryEntry, ...]) -> None:
        with self._lock:
            self._inventory = entries

    def take_sections(self, sections: tuple[Section, ...]) -> None:
        """The followed manifests after a pass; each one's Ready moves its transition time only when it changes."""
        with self._lock:
            since = {}
            for section in sections:
                old = self._section_since.get(section.file)
                keep = old is not None and old[0] == section.ready
                since[section.file] = old if keep and old else (section.ready, stamp(self._wall()))
            self._sections, self._section_since = sections, since

    def note(self, step: str, reason: str, message: str) -> None:
        """A step between passes has a problem (or, with no message, has it no more)."""
        with self._lock:
            if message:
                self._problems[step] = (reason, message)
            else:
                self._problems.pop(step, None)

    def record(self, result: Result) -> None:
        with self._lock:
            self._results.append(result)

    # -- readers (any thread) --------------------------------------------------------------

    @property
    def suspended(self) -> bool:
        with self._lock:
            return self._suspended is not None

    @property
    def last_applied_revision(self) -> str:
        with self._lock:
            return self._last_applied_revision

    @property
    def last_attempted_revision(self) -> str:
        with self._lock:
            return self._last_attempted_revision

    @property
    def last_success(self) -> float:
        with self._lock:
            return self._last_success

    @property
    def router(self) -> str:
        with self._lock:
            return self._router

    @property
    def inventory(self) -> tuple[InventoryEntry, ...]:
        with self._lock:
            return self._inventory

    @property
    def sections(self) -> tuple[Section, ...]:
        with self._lock:
            return self._sections

    @property
    def results(self) -> tuple[Result, ...]:
        """The last passes, oldest first."""
        with self._lock:
            return tuple(self._results)

    def problems(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            return dict(self._problems)

    def condition(self, kind: str) -> Condition | None:
        with self._lock:
            return self._condition(kind)

    def ready_within(self, seconds: float) -> bool:
        """Did a reconcile converge the router within the last `seconds`?"""
        with self._lock:
            done = self._last_success_at
        return done is not None and self._clock() - done <= seconds

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "lastAppliedRevision": self._last_applied_revision,
                "lastAttemptedRevision": self._last_attempted_revision,
                "lastSuccessTime": stamp(self._last_success) if self._last_success else None,
                "router": self._router,
                "routerBoot": dict(self._boot),
                "suspended": self._suspended is not None,
                "conditions": [asdict(self._condition(kind)) for kind in self._conditions],  # type: ignore[arg-type]
                "problems": [{"step": s, "reason": r, "message": m} for s, (r, m) in self._problems.items()],
                "inventory": [e.to_json() for e in self._inventory],
                "results": [r.to_json() for r in reversed(self._results)],
                "manifests": [s.to_json(self._section_since[s.file][1]) for s in self._sections],
            }

    def _condition(self, kind: str) -> Condition | None:
        # Suspension overrides what the last pass concluded: one answer on every endpoint.
        if self._suspended is not None and kind in (READY, RECONCILING):
            if kind == READY:
                return self._suspended
            return replace(self._suspended, type=RECONCILING, message="suspended")
        return self._conditions.get(kind)
