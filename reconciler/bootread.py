"""Reading the router's boot once: its uptime (or its protocol's epoch) bracketed between two readings
of a clock, and its boot id. The agent's checks between passes read it so (`agent.watch`), and so
does the pinhole plan, which keeps the reading with each pinhole it opens (`boot.restarted_since`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .backends.base import Backend
from .boot import Boot, EpochRule, Epochs
from .errors import RouterError, RouterProtocolError


@dataclass(frozen=True)
class Reading:
    uptime: int | None  # None: the router does not say, or said something that is not a number
    sent: float  # the clock when the uptime was asked for ...
    answered: float  # ... and when the answer was in
    problem: str = ""  # why the uptime is unknown, when the router's answer could not be read
    boot_id: int | None = None  # SSDP BOOTID.UPNP.ORG, when the router gives one
    rule: EpochRule | None = None  # `uptime` is this protocol's epoch (PCP, NAT-PMP)

    @property
    def boot(self) -> Boot:
        if self.rule is not None:
            return Boot.from_epoch(self.uptime, self.sent, self.answered, self.rule)
        return Boot.from_uptime(self.uptime, self.sent, self.answered, self.boot_id)


def read(backend: Backend, clock: Callable[[], float]) -> Reading:
    """The router's uptime (or epoch) and boot id; RouterError when it does not answer at all."""
    sent = clock()
    problem = ""
    try:
        uptime = backend.uptime()
    except RouterProtocolError as exc:  # it answered, with something that is not an uptime
        uptime, problem = None, f"the router's uptime could not be read: {exc}"
    except RouterError:
        raise
    except Exception as exc:  # odd text from the router (digits int() refuses) must not stop the checks
        uptime, problem = None, f"the router's uptime could not be read: {type(exc).__name__}: {exc}"
    if uptime is not None and not 0 <= uptime < 2**32:
        uptime, problem = None, f"the router's uptime {uptime} is out of range"
    answered = clock()
    rule = backend.epoch_rule if isinstance(backend, Epochs) else None
    return Reading(uptime, sent, answered, problem, backend.boot_id(), rule)
