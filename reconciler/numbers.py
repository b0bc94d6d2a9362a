"""Numbers read from text that someone else wrote: a router's answers, headers, flags, config files.

Python's `int()` and `float()` are too generous for that. They take Arabic-Indic and fullwidth
digits, `_` separators, surrounding whitespace and a `+`, so `'٨٠'` would quietly be port 80; and
they raise a bare ValueError (with Python's own wording) for superscript digits, which
`str.isdigit()` calls digits, and for integers of more than 4300 digits. Every number portctl takes
from outside goes through here instead: plain ASCII digits of a bounded length, or NotANumber,
which says what was wrong in words a user can act on.
"""

from __future__ import annotations

import math
import re

_DIGITS = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"-?[0-9]+")
# Seconds as people write them for a timeout: 5, 2.5, .5. No exponent, sign, nan or inf.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?|\.[0-9]{1,9}")
_SHOWN = 24  # characters of a bad value quoted in a message; a 5000-digit one is not echoed whole


class NotANumber(ValueError):
    """The text is not a number of the kind the field takes; str() is the reason, for a message."""

    def __init__(self, text: str, expected: str) -> None:
        self.text = text
        shown = repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")
        super().__init__(f"{shown} is not {expected}")


def ascii_int(text: str, *, max_digits: int = 10, signed: bool = False) -> int:
    """`text` as an integer if it is only ASCII digits (after a `-` when `signed`), at most `max_digits` of them."""
    kind = "an integer" if signed else "a whole number"
    if not (_SIGNED if signed else _DIGITS).fullmatch(text):
        raise NotANumber(text, f"{kind} (ASCII digits only)")
    if len(text.lstrip("-")) > max_digits:
        raise NotANumber(text, f"{kind} of at most {max_digits} digits")
    return int(text)


def seconds(value: str | float, *, allow_zero: bool = False) -> float:
    """A finite, positive number of seconds (or zero, with `allow_zero`): `5`, `2.5`, `.5`, or a
    number a YAML file already parsed (where `.nan`, `.inf` and `-1` are refused the same way)."""
    expected = "a number of seconds " + ("of 0 or more" if allow_zero else "above 0") + ", such as 5 or 2.5"
    if isinstance(value, str):
        if not _SECONDS.fullmatch(value):
            raise NotANumber(value, expected)
        number = float(value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        number = float(value)
    else:
        raise NotANumber(str(value), expected)
    if number < 0 or (number == 0 and not allow_zero):
        raise NotANumber(str(value), expected)
    return number
