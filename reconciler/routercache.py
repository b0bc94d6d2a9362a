"""What portctl remembers between runs: one small JSON file of sections, each keyed by a string.

- routers: what each router needed (its quirks, each a lesson with evidence, proof and age), keyed by UDN.
- descriptions: each router's description and chosen service, keyed by location, so a warm run
  fetches no description documents.
- networks: the last router location found on each network, so a warm run needs no discovery.
- tables: the ports each router's table held, keyed by UDN, to page the next listing safely.
- valid_manifests: digests of manifest texts that passed the schema, so an unchanged one skips jsonschema.

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
from typing import Any

from .quirks import Learned

FILE_NAME = "routers.json"
MAX_ENTRIES = 64  # per section: a laptop meets many networks; keep the most recent
Record = dict[str, Any]


def directory() -> str:
    explicit = os.environ.get("PORTCTL_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "portctl")


def path() -> str:
    return os.path.join(directory(), FILE_NAME)


def _read() -> dict[str, dict[str, Record]]:
    try:
        with open(path(), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        name: {str(k): v for k, v in section.items() if isinstance(v, dict)}
        for name, section in doc.items()
        if isinstance(section, dict)
    }


def get(section: str, key: str, max_age: float | None = None) -> Record | None:
    """The record stored under `key`, if there is one no older than `max_age` seconds."""
    record = _read().get(section, {}).get(key) if key else None
    if record is None:
        return None
    if max_age is not None and time.time() - _number(record.get("updated")) > max_age:
        return None
    return record


def put(section: str, key: str, record: Record | None) -> None:
    """Store (or with None, forget) `record`.

    The file is replaced atomically, so a reader never sees it half-written; but nothing locks the
    read-modify-write, so of two runs writing at once, one's update can be lost (it is re-learned).
    """
    if not key:
        return
    doc = _read()
    entries = doc.setdefault(section, {})
    if record is None:
        if entries.pop(key, None) is None:
            return
    else:
        entries[key] = {**record, "updated": time.time()}
    newest = sorted(entries.items(), key=lambda kv: -_number(kv[1].get("updated")))
    doc[section] = dict(newest[:MAX_ENTRIES])
    with contextlib.suppress(OSError):
        os.makedirs(directory(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".routers.", dir=directory())
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({**doc, "version": 2}, f, indent=1, sort_keys=True)
            os.replace(tmp, path())
        except OSError:
            os.unlink(tmp)
            raise


def load(udn: str, now: float) -> Learned:
    """What `udn` needed, without the lessons too old to trust at `now`."""
    return Learned.from_json(get("routers", udn), now)


def save(udn: str, learned: Learned, friendly_name: str = "") -> None:
    """Record what `udn` needed."""
    put("routers", udn, {**learned.to_json(), "friendly_name": friendly_name[:100]})
    learned.changed = False


def _number(value: object) -> float:
    return value if isinstance(value, int | float) else 0.0
