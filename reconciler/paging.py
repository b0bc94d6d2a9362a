"""Which port ranges are safe to read with one GetListOfPortMappings each.

Debian's miniupnpd 2.3.1 overflows its buffer when one listing's range holds more than PAGE_LIMIT
entries, whatever NewNumberOfPorts says (a few past it answer PAGE_LIMIT, the newest; more crash it),
so the table is read in port ranges. Where the ports lie is only known from
the last read, so the ranges are cut to hold at most PAGE_TARGET entries each as of then: a range
can take PAGE_LIMIT - PAGE_TARGET new entries before it is unsafe, and the backend checks (with one
GetGenericPortMappingEntry) that the table has not grown by more than that in all.
"""

from __future__ import annotations

from collections.abc import Iterable

PAGE_LIMIT = 128
PAGE_TARGET = 64
GROWTH = PAGE_LIMIT - PAGE_TARGET
# A table with no more entries than this fits one listing per protocol, whatever its ports.
SMALL_TABLE = 96
FIRST_PORT, LAST_PORT = 1, 65535


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
