"""Human durations: `90`, `90s`, `90m`, `1h30m`, `7d`, `2w`."""

from __future__ import annotations

import re

from .numbers import NotANumber, ascii_int

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]+)([smhdw])")  # [0-9], not \d: int() would take any script's digits
_MAX_DIGITS = 12  # some 30 000 years in seconds: a lease or interval longer than that is a typo


def parse_duration(text: str | int) -> int:
    """Seconds in `text`; raises ValueError naming the text when it is not a duration."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    if s.isascii() and s.isdigit():
        return ascii_int(s, max_digits=_MAX_DIGITS)
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s or any(len(n) > _MAX_DIGITS for n, _ in parts):
        raise NotANumber(str(text), "a duration (examples: 3600, 90m, 1h30m, 7d)")
    return sum(int(n) * _UNITS[u] for n, u in parts)


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
