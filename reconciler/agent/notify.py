"""The optional webhook: one JSON POST when a reconcile changed the router or newly failed."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from .logs import JsonLog

TIMEOUT = 5.0


class Webhook:
    def __init__(self, url: str, log: JsonLog) -> None:
        self.url = url
        self._log = log

    def send(self, event: dict[str, Any]) -> None:
        """POST in the background: a slow receiver must not delay the loop."""
        threading.Thread(target=self._post, args=(event,), name="portctl-webhook", daemon=True).start()

    def _post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "portctl"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
                resp.read(1024)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._log.warning("webhook delivery failed", webhook=self.url, error=str(exc))
