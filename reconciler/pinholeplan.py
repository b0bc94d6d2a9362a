"""The pinholes a plan opens, renews and closes: the manifest's against what the inventory records
this owner holds (the router lists none). Pure: no I/O; `now` is passed in.

A held pinhole is renewed (UpdatePinhole) once less than `renew_below` of its lease (as the router
granted it) is left (half, for a plan; the agent renews earlier, see renewal.py), or when the
manifest asks another lease; one whose lease has run out is opened again, and so is one opened
before the router's latest restart (a restart loses every pinhole, whatever the inventory's expiry
says): the boot recorded with it is compared with `boot`, the router's as read now. An unknown boot
on either side proves nothing.
Prune closes only what this owner recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import renewal
from .boot import Boot, restarted_since
from .models import DesiredPinhole, HeldPinhole, Pinhole, PinholeAction, PinholeChange

RESTARTED = "the router restarted since it was opened"


def diff(
    desired: Sequence[DesiredPinhole],
    held: Sequence[HeldPinhole],
    now: float,
    *,
    prune: bool,
    boot: Boot | None = None,
    renew_below: float = renewal.PLAN_BELOW,
) -> tuple[PinholeChange, ...]:
    """The writes that make the router hold `desired` (resolved: no `auto` left) and, with `prune`,
    nothing else of what `held` records."""
    recorded = {h.key: h for h in held}
    out = []
    for d in desired:
        want = Pinhole(d.key, d.lease)
        h = recorded.get(d.key)
        if h is None:
            out.append(PinholeChange(PinholeAction.OPEN, d.name, d.key, None, want, "declared"))
        elif h.expires <= now:
            out.append(PinholeChange(PinholeAction.OPEN, d.name, d.key, h, want, "its lease ran out"))
        elif restarted_since(h.boot, boot):
            out.append(PinholeChange(PinholeAction.OPEN, d.name, d.key, h, want, RESTARTED))
        elif h.pinhole.lease != d.lease:
            out.append(PinholeChange(PinholeAction.RENEW, d.name, d.key, h, want, "the manifest asks another lease"))
        elif h.expires - now < min(d.lease, h.lasts) * renew_below:
            passed = (
                "half its lease has passed" if renew_below == renewal.PLAN_BELOW else "its lease is due for renewal"
            )
            out.append(PinholeChange(PinholeAction.RENEW, d.name, d.key, h, want, passed))
        elif h.name != d.name:
            out.append(PinholeChange(PinholeAction.RENEW, d.name, d.key, h, want, f"renamed from {h.name}"))
    if prune:
        wanted = {d.key for d in desired}
        out += [close(h, "no longer declared") for h in held if h.key not in wanted]
    return tuple(out)


def close(h: HeldPinhole, reason: str) -> PinholeChange:
    return PinholeChange(PinholeAction.CLOSE, h.name, h.key, h, None, reason)
