"""What portctl remembers between runs: one small JSON file of sections, each keyed by a string.

- routers: what each router needed (its quirks, each a lesson with evidence, proof and age), keyed by UDN.
- descriptions: each router's description and chosen service, keyed by location, so a warm run
  fetches no description documents.
- networks: the last router location found on each network, so a warm run needs no discovery.
- tables: the ports each router's table held, keyed by UDN, to page the next listing safely.
- valid_manifests: digests of manifest texts that passed the schema, so a warm plan skips it.

The CLI or the agent makes one `Cache` and hands it to whatever reads or writes it; nothing finds
the file on its own. Several portctl processes may share the file (an agent and a hand-run apply),
each writing a different section: every change is a read-modify-write under an flock on a lock file
beside it, re-reading the file under the lock so another process's change is kept, and writing
atomically (temporary file, then rename) so a reader never sees a torn file and needs no lock.

It is a cache: unreadable or unknown content is ignored (the router's answers re-teach it), and
failing to write it never fails a command.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from . import lock
from .quirks import Learned, Quirk

FILE_NAME = "routers.json"
LOCK_NAME = "routers.json.lock"
VERSION = 2
MAX_ENTRIES = 64  # per section: a laptop meets many networks; keep the most recent
# A writer holds the lock for one read-modify-write of a small file; waiting longer than this means
# something is wrong with the holder, and a cache write is not worth hanging a command for.
LOCK_WAIT = 30.0
_POLL = 0.01
Record = dict[str, Any]
Doc = dict[str, dict[str, Record]]


def default_directory() -> str:
    """$PORTCTL_CACHE_DIR, else $XDG_CACHE_HOME/portctl, else ~/.cache/portctl."""
    explicit = os.environ.get("PORTCTL_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "portctl")


class Cache:
    """The cache file in `directory`; None keeps nothing (every read misses, every write is dropped).

    `clock` gives the wall-clock time that records are stamped with and aged by.
    """

    def __init__(self, directory: str | None, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock

    @classmethod
    def from_env(cls) -> Cache:
        return cls(default_directory())

    @property
    def lock_directory(self) -> str:
        """Where router locks live (`lock`): beside the cache, so every portctl sharing it sees them."""
        return self.directory or default_directory()

    @property
    def path(self) -> str | None:
        return os.path.join(self.directory, FILE_NAME) if self.directory else None

    def get(self, section: str, key: str, max_age: float | None = None) -> Record | None:
        """The record stored under `key`, if there is one no older than `max_age` seconds."""
        record = self.read().get(section, {}).get(key) if key else None
        if record is None:
            return None
        if max_age is not None and self.clock() - _number(record.get("updated")) > max_age:
            return None
        return record

    def put(self, section: str, key: str, record: Record | None) -> None:
        """Store (or with None, forget) `record`, keeping whatever other processes stored meanwhile."""
        if not key:
            return
        stamp = self.clock()
        self.update(lambda doc: _store(doc, section, key, record, stamp))

    def update(self, change: Callable[[Doc], bool], *, strict: bool = False) -> None:
        """Apply `change` to the file's current content under the lock; it returns whether to write.

        A failure to write is ignored (it is a cache), unless `strict`: then it raises OSError.
        """
        if self.directory is None:
            return
        with contextlib.suppress(*(() if strict else (OSError,))), self.locked():
            doc = self.read()
            if change(doc):
                self._write(doc)

    def read(self) -> Doc:
        """The whole file as sections; empty when there is none or it cannot be read."""
        if self.path is None:
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
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

    def learned(self, udn: str, now: float | None = None) -> Learned:
        """What the router `udn` needed, as earlier runs learned it, without the lessons too old to
        trust at `now` (the cache's clock by default)."""
        return Learned.from_json(self.get("routers", udn), self.clock() if now is None else now)

    def remember(self, udn: str, learned: Learned, friendly_name: str = "") -> None:
        """Record what `udn` needed: what `learned` learned and forgot since it was loaded, written
        over what the file holds now, so another process's lessons about the same router stay."""
        if not udn:
            return
        stamp = self.clock()

        def change(doc: Doc) -> bool:
            held = doc.get("routers", {}).get(udn)
            merged = learned.onto(Learned.from_json(held, stamp))
            name = friendly_name[:100] or str((held or {}).get("friendly_name", ""))
            return _store(doc, "routers", udn, {**merged.to_json(), "friendly_name": name}, stamp)

        self.update(change)
        learned.saved()

    def forget(self, udn: str, which: Collection[Quirk] | None = None) -> list[Quirk]:
        """Drop what the router `udn` was learned to need (`which`, or everything with None), under the
        lock so that nothing another process writes meanwhile is lost; returns the needs dropped.
        Raises OSError when the file cannot be written: unlike a lesson, a forget asked for must hold."""
        dropped: list[Quirk] = []
        stamp = self.clock()

        def change(doc: Doc) -> bool:
            held = doc.get("routers", {}).get(udn)
            if held is None:
                return False
            learned = Learned.from_json(held, stamp)
            dropped.extend(learned.forget(which))
            record = {**learned.to_json(), "friendly_name": str(held.get("friendly_name", ""))}
            return _store(doc, "routers", udn, record, stamp)

        if udn:
            self.update(change, strict=True)
        return dropped

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache's lock: every read-modify-write of a file in its directory runs under it."""
        assert self.directory is not None
        fd = lock.acquire(os.path.join(self.directory, LOCK_NAME), LOCK_WAIT, _POLL)
        if fd is None:
            raise OSError("the cache stayed locked")
        try:
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, doc: Doc) -> None:
        self.write_file(FILE_NAME, {**doc, "version": VERSION})

    def write_file(self, name: str, doc: dict[str, Any]) -> None:
        """Replace the file `name` in the cache's directory with `doc` as JSON, atomically (temporary
        file, then rename), so a reader never sees it torn. Call it under `locked`."""
        import tempfile  # only a write needs it, and a warm plan of an unchanged table writes nothing

        assert self.directory is not None
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
            os.replace(tmp, os.path.join(self.directory, name))
        except OSError:
            os.unlink(tmp)
            raise


def _store(doc: Doc, section: str, key: str, record: Record | None, stamp: float) -> bool:
    """Put `record` (or with None, drop the entry) into `doc`, keeping each section's newest
    MAX_ENTRIES; returns whether `doc` changed."""
    entries = doc.setdefault(section, {})
    if record is None:
        return entries.pop(key, None) is not None
    entries[key] = {**record, "updated": stamp}
    newest = sorted(entries.items(), key=lambda kv: -_number(kv[1].get("updated")))
    doc[section] = dict(newest[:MAX_ENTRIES])
    return True


def _number(value: object) -> float:
    return value if isinstance(value, int | float) else 0.0
