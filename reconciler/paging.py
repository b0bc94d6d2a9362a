"""Which port ranges are safe to read with one GetListOfPortMappings each.

Debian's miniupnpd 2.3.1 overflows its buffer when one listing's range holds more than PAGE_LIMIT
entries, whatever NewNumberOfPorts says (a few past it answer PAGE_LIMIT, the newest; more crash it),
so the table is read in port ranges. Where the ports lie is only known from
the last read, so the ranges are cut to hold at most PAGE_TARGET entries each as of then: a range
can take PAGE_LIMIT - PAGE_TARGET new entries before it is unsafe, and the backend checks (with one
GetGenericPortMappingEntry) that the table has not grown by more than that in all.

That same probe, made at the size the last read proved, also proves the pages complete: a table that
held at most N entries before it was listed, read as N distinct rows, was read whole, whatever a
router cuts its pages to. So a table that did not change costs one probe; only a count short of the
bound leaves a gap (rows deleted, or a page cut short without looking full) that a second probe at
the count settles.
"""

from __future__ import annotations

from collections.abc import Iterable

PAGE_LIMIT = 128
PAGE_TARGET = 64
GROWTH = PAGE_LIMIT - PAGE_TARGET
# A table with no more entries than this fits one listing per protocol, whatever its ports.
SMALL_TABLE = 96
FIRST_PORT, LAST_PORT = 1, 65535


def bounds(total: int | None) -> tuple[int, ...]:
    """Table sizes to probe, smallest first, before listing; the first one the table is within is the
    bound the pages' count is checked against. `total` is the size the last read proved (None: never
    read), and its ranges are safe for any table within it plus GROWTH, or within SMALL_TABLE."""
    if total is None:
        return (SMALL_TABLE,)
    # Probing the unchanged size first is what lets an unchanged table skip the count check.
    return (total, max(total + GROWTH, SMALL_TABLE))


def proven_whole(bound: int, count: int) -> bool:
    """Do `count` distinct rows read from a table a probe showed held at most `bound` prove it read whole?"""
    return count >= bound


def cuts(ports: Iterable[int], target: int = PAGE_TARGET) -> list[int]:
    """Last ports of all ranges but the final one, so that each range holds at most `target` of `ports`."""
    ordered = sorted(set(ports))
    out = []
    for i in range(target, len(ordered), target):
        # Cut halfway between neighbours, so a port added next to either stays in a lightly filled range.
        out.append((ordered[i - 1] + ordered[i]) // 2)
    return out


def ranges(cut_points: Iterable[int]) -> list[tuple[int, int]]:
    """The ranges covering every port, split after each cut point."""
    out, start = [], FIRST_PORT
    for cut in sorted(set(cut_points)):
        if start <= cut < LAST_PORT:
            out.append((start, cut))
            start = cut + 1
    out.append((start, LAST_PORT))
    return out
