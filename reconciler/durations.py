"""Human durations: `90`, `90s`, `90m`, `1h30m`, `7d`, `2w`."""

from __future__ import annotations

import re

from .numbers import NotANumber

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The manifest schema's lease pattern says the same. Whole text, ASCII digits (str.isdigit() takes
# '²', which int() refuses) and a bounded count of them (int() of thousands of digits is refused).
_SECONDS = re.compile(r"[0-9]{1,12}")
_DURATION = re.compile(r"(?:[0-9]{1,12}[smhdw]){1,5}")
_PART = re.compile(r"([0-9]+)([smhdw])")


def parse_duration(text: str | int) -> int:
    """Seconds in `text`; raises ValueError naming the text when it is not a duration."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = text if isinstance(text, str) else ""
    if _SECONDS.fullmatch(s):
        return int(s)
    if not _DURATION.fullmatch(s):
        raise NotANumber(str(text), "a duration (examples: 3600, 90m, 1h30m, 7d)")
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(s))


def format_duration(seconds: int) -> str:
    """The shortest exact rendering: 5400 -> '1h30m', 0 -> '0s'."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
