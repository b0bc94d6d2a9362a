"""The cheap check between passes: the router's WAN address, uptime and boot id, and whether it restarted.

A restart is a boot moment that moved forward, not an uptime smaller than the last one seen: a
router that restarted quickly can show more uptime at the next check than it had at the last, and
its event subscribers are gone all the same. Each reading brackets the moment the router answered
between two clock readings, so a slow answer never looks like a restart. A boot id (SSDP
BOOTID.UPNP.ORG) that changed is a restart whatever the uptime says. A PCP or NAT-PMP router gives
an epoch instead of an uptime, judged by its RFC's rule (`boot.Epochs`). `reconciler.boot` decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import bootread
from ..backends.base import Backend
from ..boot import restarted


@dataclass(frozen=True)
class Sample(bootread.Reading):
    """A reading of the router's boot (bootread) and its WAN address then."""

    address: str = ""

    def booted_after(self, other: Sample) -> bool:
        """Did the router boot after it answered `other`? Only when nothing else can explain the readings."""
        return bool(restarted(other.boot, self.boot))


def read(backend: Backend, clock: Callable[[], float]) -> Sample:
    """The router's address and uptime; RouterError when it does not answer."""
    address = backend.external_address()
    r = bootread.read(backend, clock)
    return Sample(r.uptime, r.sent, r.answered, r.problem, r.boot_id, r.rule, address=address)
