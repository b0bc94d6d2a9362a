"""How long to wait for one request: what the router has been seen to need, within a hard ceiling.

A fixed timeout fits no router: miniupnpd reloads its whole rule list on every call, so on a busy
box with a large nftables table one DeletePortMapping can take longer than the 5 s default while
the router is perfectly well. The deadline for an action is therefore the larger of the user's
--timeout and `FACTOR` times the slowest of this router's recent answers to that action (or to any
action, before that one has answered), never above `CEILING`: a router that needs more than that
is treated as gone. A request that timed out counts as having needed its whole deadline, so the
next one waits longer; the message then says what the wait was and why.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

CEILING = 30.0  # seconds; UPNP-NOTES: single calls occasionally took > 30 s under load, and then one gives up
FACTOR = 3.0  # headroom over the slowest recent answer: load comes in bursts
RECENT = 8  # answers per action remembered: old slowness ages out as the router recovers


@dataclass(frozen=True)
class Deadline:
    """The wait for one request, and why it is not the plain --timeout ("" when it is)."""

    seconds: float
    why: str = ""


class Patience:
    """Per router: the slowest recent answers per action, and the deadline they earn."""

    def __init__(
        self, timeout: float, *, ceiling: float = CEILING, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        # A --timeout above the ceiling is the user's explicit wish: honour it as the ceiling.
        self.ceiling = max(ceiling, timeout)
        self.clock = clock  # measures how long answers took
        # (seconds, timed out) per action, newest last
        self._seen: defaultdict[str, deque[tuple[float, bool]]] = defaultdict(lambda: deque(maxlen=RECENT))

    def observe(self, action: str, seconds: float, *, timed_out: bool = False) -> None:
        """Note that `action` took `seconds` (at least that long, when it `timed_out`)."""
        self._seen[action].append((max(seconds, 0.0), timed_out))

    def deadline(self, action: str) -> Deadline:
        """How long to wait for `action` now."""
        (slowest, timed_out), basis = self._slowest(action)
        wanted = FACTOR * slowest
        if wanted <= self.timeout:
            return Deadline(self.timeout)
        seconds = min(self.ceiling, round(wanted, 1))
        needed = "more than" if timed_out else "up to"
        of = "" if basis == action else f" for {basis}"
        return Deadline(seconds, f"this router has needed {needed} {slowest:.1f} s{of}")

    def _slowest(self, action: str) -> tuple[tuple[float, bool], str]:
        """The slowest recent answer to `action`, or to any action before `action` has answered."""
        if self._seen.get(action):
            return max(self._seen[action]), action
        known = [(max(times), name) for name, times in self._seen.items() if times]
        return max(known) if known else ((0.0, False), action)
