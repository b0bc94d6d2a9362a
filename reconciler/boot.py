"""A router's boot: when it last started, as far as its answers prove, and the one place that decides
whether it restarted since an earlier reading.

Protocol-neutral on purpose: UPnP gives an uptime (GetStatusInfo) and an SSDP `BOOTID.UPNP.ORG`;
PCP and NAT-PMP give an epoch (seconds since their mapping state began). Each becomes a `Boot`, and
`restarted` compares two of them the same way whatever they came from.

The moment is a bracket, not a point: a router's answer takes time, and it counts uptime in whole
seconds, so a reading says only that the boot happened between `earliest` and `latest`. A restart
is a boot whose earliest possible moment is later than the previous boot's latest one, so a slow
answer never looks like a restart. A boot id that changed is a restart whatever the uptime says (a
router that restarted quickly can show more uptime than at the last reading).

An epoch is judged by its own protocol's rule instead (RFC 6887 section 8.5, RFC 6886 section 3.6):
it may fall behind the client's clock by a little (2 s, and a share of the time between readings,
for drift), so a router whose clock runs slow is not taken for one that restarted. The rule is
handed in with the reading (`EpochRule`), so this module knows no protocol.

A reading kept long (on disk, with each pinhole it was taken for: `to_record`) is compared with a
later one by `restarted_since`, which allows the router's clock a small drift over the time between
them: a router counting its uptime on a crystal of its own must not look restarted after hours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from .durations import format_duration

UPTIME_GRAIN = 1.0  # routers count uptime (and epochs) in whole seconds
BOOT_ID_LIMIT = 2**31  # UDA 1.1 section 1.2.2: BOOTID.UPNP.ORG is a non-negative 31-bit integer
# The share of the time between two readings a router's clock may run off ours: 1000 ppm, ten times
# a poor crystal's error, so a day between readings allows 86 s (a restart moves the boot by the
# time the router had been up).
DRIFT = 0.001


# (epoch before, client time it arrived, epoch now, client time it arrived) -> the state was lost
Lost = Callable[[int, float, int, float], bool]


@dataclass(frozen=True)
class EpochRule:
    """How a protocol's epoch proves a restart: its name as a boot's source and its RFC's test."""

    source: str  # "pcp-epoch", "natpmp-epoch"
    lost: Lost = field(compare=False)
    label: str = "epoch"  # what `portctl show` calls the value: "PCP epoch"


@runtime_checkable
class Epochs(Protocol):
    """A backend whose `uptime()` is an epoch (seconds since its mapping state began), judged by `epoch_rule`."""

    epoch_rule: EpochRule


@dataclass(frozen=True)
class Boot:
    """When the router booted, on the clock of the readings: between `earliest` and `latest` (None:
    it does not say), and the id it gives that boot (None: it gives none)."""

    earliest: float | None = None
    latest: float | None = None
    boot_id: int | None = None
    source: str = ""  # what the moment is from: "uptime", "pcp-epoch", "natpmp-epoch"
    epoch: tuple[int, float] | None = None  # an epoch and the clock when it arrived, for `rule`
    rule: EpochRule | None = None
    at: float | None = None  # the clock when the reading was answered

    @classmethod
    def from_uptime(cls, uptime: int | None, sent: float, answered: float, boot_id: int | None = None) -> Boot:
        """The boot an uptime proves: asked at `sent`, answered at `answered` (both on one clock)."""
        if uptime is None:
            return cls(boot_id=boot_id)
        return cls(sent - uptime - UPTIME_GRAIN, answered - uptime, boot_id, "uptime", at=answered)

    @classmethod
    def from_epoch(cls, epoch: int | None, sent: float, answered: float, rule: EpochRule) -> Boot:
        """The boot an epoch proves (asked at `sent`, answered at `answered`), judged by `rule`."""
        if epoch is None:
            return cls()
        moment = cls.from_uptime(epoch, sent, answered)
        return replace(moment, source=rule.source, epoch=(epoch, answered), rule=rule)

    def after(self, before: Boot | None) -> Boot:
        """What is known of the boot once this reading is taken in after `before`: what this one does not
        say (a boot id missed this time) is kept from `before`, unless this reading is a later boot."""
        if before is None or restarted(before, self):
            return self
        boot_id = self.boot_id if self.boot_id is not None else before.boot_id
        if self.latest is None:
            return replace(before, boot_id=boot_id)
        return replace(self, boot_id=boot_id)

    def says(self) -> bool:
        """Does this reading say anything of the boot (an id or a moment)?"""
        return self.boot_id is not None or self.latest is not None

    def to_record(self) -> dict[str, Any]:
        """The reading as JSON, to be compared later (`restarted_since`) on the same clock; its rule
        is not kept, only its source, and a later reading of the same source lends its own."""
        return {
            "boot_id": self.boot_id,
            "earliest": self.earliest,
            "latest": self.latest,
            "source": self.source,
            "epoch": list(self.epoch) if self.epoch is not None else None,
            "at": self.at,
        }

    @classmethod
    def from_record(cls, record: object) -> Boot | None:
        """A reading as `to_record` wrote it; None (unknown) for anything else."""
        if not isinstance(record, dict):
            return None
        try:
            boot_id, epoch = record.get("boot_id"), record.get("epoch")
            return cls(
                _seconds(record.get("earliest")),
                _seconds(record.get("latest")),
                int(boot_id) if isinstance(boot_id, int) and not isinstance(boot_id, bool) else None,
                str(record.get("source") or ""),
                (int(epoch[0]), float(epoch[1])) if isinstance(epoch, list) and len(epoch) == 2 else None,
                at=_seconds(record.get("at")),
            )
        except (TypeError, ValueError):
            return None


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a time: {value!r}")
    return float(value)


def restarted_since(recorded: Boot | None, now: Boot | None) -> str:
    """Why the router booted since `recorded`, a reading kept a while (up to a day), judged as `restarted`
    with the router's clock allowed to drift (DRIFT); "" when nothing proves it, or either is unknown."""
    if recorded is None or now is None:
        return ""
    if recorded.rule is None and now.rule is not None and recorded.source == now.rule.source:
        recorded = replace(recorded, rule=now.rule)  # the rule of the protocol both readings came from
    return restarted(recorded, now, drift=DRIFT)


def restarted(before: Boot | None, now: Boot | None, *, drift: float = 0.0) -> str:
    """Why `now` is a later boot than `before`, in words for a log line; "" when nothing proves it.
    `drift` is the share of the time between the readings that the router's uptime may be off."""
    if before is None or now is None:
        return ""
    if before.boot_id is not None and now.boot_id is not None and before.boot_id != now.boot_id:
        return f"its BOOTID went from {before.boot_id} to {now.boot_id}"
    rule = now.rule
    if rule is not None and before.rule == rule and before.epoch is not None and now.epoch is not None:
        (was, then), (value, at) = before.epoch, now.epoch
        if rule.lost(was, then, value, at):
            return f"its {rule.label} went from {was} s to {value} s in {at - then:.0f} s"
        return ""
    if before.latest is not None and now.earliest is not None:
        between = now.at - before.at if now.at is not None and before.at is not None else 0.0
        if now.earliest > before.latest + drift * max(0.0, between):
            return f"its {now.source or 'uptime'} went back"
    return ""


@dataclass(frozen=True)
class Booted:
    """The router's boot as `portctl show` reports it: its uptime (or, with `rule`, its epoch) read at
    `now` (wall clock) and its boot id."""

    uptime: int | None
    now: float
    boot_id: int | None = None
    rule: EpochRule | None = None  # the value is this protocol's epoch, not the router's uptime

    @property
    def since(self) -> str | None:
        """The boot moment in UTC, to the second; None when the router does not give its uptime."""
        if self.uptime is None:
            return None
        moment = datetime.fromtimestamp(self.now - self.uptime, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    def text(self) -> str:
        if self.rule is not None:
            if self.uptime is None:
                return f"{self.rule.label} unknown"
            return f"{self.rule.label} {format_duration(self.uptime)} (mapping state since {self.since})"
        up = f"up {format_duration(self.uptime)}, since {self.since}" if self.uptime is not None else "uptime unknown"
        return up + (f", BOOTID {self.boot_id}" if self.boot_id is not None else "")

    def to_json(self) -> dict[str, Any]:
        """`show --format json`'s "boot": uptime_seconds or epoch_seconds (by `source`: "uptime", "pcp-epoch",
        "natpmp-epoch"), since (UTC, ISO 8601) and boot_id, each null when unknown."""
        epoch = self.rule is not None
        return {
            "source": self.rule.source if self.rule is not None else "uptime",
            "uptime_seconds": None if epoch else self.uptime,
            "epoch_seconds": self.uptime if epoch else None,
            "since": self.since,
            "boot_id": self.boot_id,
        }
