"""What each router needed, remembered between runs: one small JSON file, keyed by router UDN.

The file lives in $PORTCTL_CACHE_DIR, else $XDG_CACHE_HOME/portctl, else ~/.cache/portctl. It is a
cache: unreadable or unknown content is ignored (the router's answers re-teach it), and failing to
write it never fails a command.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time

from .quirks import Learned

FILE_NAME = "routers.json"
MAX_ROUTERS = 64  # a laptop meets many networks; keep the most recent


def directory() -> str:
    explicit = os.environ.get("PORTCTL_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "portctl")


def path() -> str:
    return os.path.join(directory(), FILE_NAME)


def _read() -> dict[str, dict[str, object]]:
    try:
        with open(path(), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    routers = doc.get("routers") if isinstance(doc, dict) else None
    return {str(k): v for k, v in routers.items() if isinstance(v, dict)} if isinstance(routers, dict) else {}


def load(udn: str) -> Learned:
    return Learned.from_json(_read().get(udn)) if udn else Learned()


def save(udn: str, learned: Learned, friendly_name: str = "") -> None:
    """Record what `udn` needed; atomic, so concurrent runs never leave a torn file."""
    if not udn:
        return
    routers = _read()
    routers[udn] = {**learned.to_json(), "friendly_name": friendly_name[:100], "updated": int(time.time())}
    newest = sorted(routers.items(), key=lambda kv: -_number(kv[1].get("updated")))
    doc = {"version": 1, "routers": dict(newest[:MAX_ROUTERS])}
    with contextlib.suppress(OSError):
        os.makedirs(directory(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".routers.", dir=directory())
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
            os.replace(tmp, path())
        except OSError:
            os.unlink(tmp)
            raise
    learned.changed = False


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0
