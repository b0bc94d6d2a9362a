"""One writer per router: an advisory lock per router UDN, so two portctl processes applying to the
same router never interleave their reads and writes (each would plan from a table the other is
changing). The lock is flock(2) on a file, so it dies with its process and needs no cleanup.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator

from .errors import LockTimeout

POLL = 0.05  # seconds between attempts while another process holds the lock


def path(directory: str, udn: str) -> str:
    """The lock file for `udn` under `directory` (the cache's)."""
    name = hashlib.sha256(udn.encode()).hexdigest()[:20]  # a UDN comes from the network: never a path
    return os.path.join(directory, "locks", f"{name}.lock")


def acquire(where: str, timeout: float, poll: float = POLL) -> int | None:
    """An open descriptor of the file `where` holding its exclusive flock, or None when another process
    held it for `timeout` seconds. Closing the descriptor releases the lock."""
    os.makedirs(os.path.dirname(where), exist_ok=True)
    fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(poll)


@contextlib.contextmanager
def held(directory: str, udn: str, timeout: float) -> Iterator[None]:
    """Hold the router's lock (a file under `directory`) for the block, waiting up to `timeout`
    seconds for another holder."""
    where = path(directory, udn)
    fd = acquire(where, timeout)
    if fd is None:
        raise LockTimeout(
            f"another portctl is applying to router {udn} and did not finish within "
            f"{timeout:g}s (lock {where}); try again, or raise --lock-timeout"
        )
    try:
        yield
    finally:
        os.close(fd)  # releases the lock
