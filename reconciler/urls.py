"""Whether a text can name a router: checked where a URL is given (a flag, the environment, the
manifest), so a bad one is one clear message there, not a traceback from deep in a backend."""

from __future__ import annotations

from urllib.parse import urlsplit


def problem(url: str, *, raise_as: type[Exception] | None = None) -> str:
    """Why `url` cannot name a router ("" if it can): a host and, if given, a port urllib can read."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it is the check: a port out of range or not a number raises
        why = "" if parts.hostname else "it names no host"
    except ValueError as exc:
        why = str(exc)
    if why and raise_as is not None:
        raise raise_as(f"{url!r} is not a router URL: {why}")
    return why
