"""The agent's status, shaped like a Flux object's: conditions with reasons, revisions, inventory.

Written by the loop, read by the HTTP listener's threads; every access holds the lock.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

# Condition types
READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
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

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["started"] = stamp(self.started)
        doc["duration"] = round(self.duration, 3)
        doc["changes"] = list(self.changes)
        return doc


class Status:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, Condition] = {}
        self.last_applied_revision = ""
        self.last_attempted_revision = ""
        self.last_success = 0.0  # wall clock of the last reconcile that converged the router
        self.last_success_monotonic: float | None = None
        self.router = ""
        self.suspended = False
        self.inventory: tuple[InventoryEntry, ...] = ()
        self.results: collections.deque[Result] = collections.deque(maxlen=RESULTS_KEPT)
        self.set(READY, "Unknown", PROGRESSING, "no reconcile has run yet")

    def set(self, kind: str, status: str, reason: str, message: str) -> None:
        """Set a condition; its transition time moves only when its status does."""
        with self._lock:
            old = self._conditions.get(kind)
            since = old.lastTransitionTime if old and old.status == status else stamp(time.time())
            self._conditions[kind] = Condition(kind, status, reason, message, since)

    def clear(self, kind: str) -> None:
        with self._lock:
            self._conditions.pop(kind, None)

    def condition(self, kind: str) -> Condition | None:
        with self._lock:
            return self._conditions.get(kind)

    def record(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def ready_within(self, seconds: float) -> bool:
        """Did a reconcile converge the router within the last `seconds`?"""
        with self._lock:
            done = self.last_success_monotonic
        return done is not None and time.monotonic() - done <= seconds

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "lastAppliedRevision": self.last_applied_revision,
                "lastAttemptedRevision": self.last_attempted_revision,
                "lastSuccessTime": stamp(self.last_success) if self.last_success else None,
                "router": self.router,
                "suspended": self.suspended,
                "conditions": [asdict(c) for c in self._conditions.values()],
                "inventory": [e.to_json() for e in self.inventory],
                "results": [r.to_json() for r in reversed(self.results)],
            }
