"""Logs as one JSON object per line: machine-readable for Loki or journald, and each says in words what happened."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any


class JsonLog:
    """Writes {"ts", "level", "msg", ...fields} lines; fields with None values are left out."""

    def __init__(self, stream: IO[str] | None = None, **context: Any) -> None:
        self._stream = stream or sys.stderr
        self._context = context
        self._lock = threading.Lock()

    def bind(self, **context: Any) -> None:
        """Fields every later line carries (the revision in force, the router)."""
        self._context.update(context)

    def info(self, msg: str, **fields: Any) -> None:
        self._write("info", msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._write("warning", msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._write("error", msg, fields)

    def _write(self, level: str, msg: str, fields: dict[str, Any]) -> None:
        now = time.time()
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": level,
            "msg": msg,
        }
        record.update((k, v) for k, v in {**self._context, **fields}.items() if v is not None)
        # json.dumps escapes control characters, so text that came from the network cannot forge lines.
        line = json.dumps(record, default=str)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed log stream must not stop the loop that keeps the router converged
