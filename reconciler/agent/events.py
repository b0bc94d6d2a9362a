"""The GENA subscription to the router's connection service, kept alive by the agent's loop.

A listener on the interface towards the router hears NOTIFYs; `tend()` (called by the loop)
subscribes, renews at half the granted time, and reports when an event asks for a reconcile.
A renewal the router refuses means it forgot the subscription (it restarted), which also calls for
a reconcile. Routers without events, or that refuse SUBSCRIBE, are polled at the interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..backends.base import Backend
from ..errors import RouterError
from . import status as st
from .config import AgentConfig
from .logs import JsonLog

EVENT_SETTLE = 0.3  # events come in bursts (one per row of an apply): reconcile once after the burst
EVENTS_RETRY = 300.0  # how long to poll before asking a router that refused events again


class Events:
    """The GENA subscription: a listener on the interface towards the router, subscribed and renewed.

    Any event makes the agent reconcile shortly after; a renewal the router refuses means it
    forgot the subscription (it restarted), which also calls for a reconcile.
    """

    def __init__(
        self, config: AgentConfig, log: JsonLog, reconcile: Callable[[], object], wake: Callable[[], None]
    ) -> None:
        self.config = config
        self.log = log
        self._reconcile = reconcile
        self._wake = wake
        self.listener: Any = None  # gena.EventListener, imported only when events are used
        self.sid = ""
        self.url = ""
        self.next_renewal = float("inf")
        self.retry_at = 0.0
        self.last_event = 0.0
        self._due: float | None = None
        self._lock = threading.Lock()

    def attach(self, backend: Backend) -> None:
        """Use `backend`'s router from now on (subscribing happens in `tend`)."""
        url = backend.event_url() if self.config.events else ""
        if url == self.url and self.listener is not None:
            return
        self.close()
        self.url, self.retry_at = url, 0.0
        if not url:
            if self.config.events:
                self.log.info("the router offers no events; polling every interval")
            return
        from ..backends import gena

        router_host = urlsplit(url).hostname or ""
        try:
            self.listener = gena.EventListener(
                backend.local_address(), router_host, self._on_event, self.config.events_port
            ).start()
        except (OSError, RouterError) as exc:
            self.log.warning(f"cannot listen for router events ({exc}); polling every interval")
            self.url = ""

    def tend(self) -> float | None:
        """Subscribe or renew when due; returns when an event asks for a reconcile, if one does."""
        from ..backends import gena

        now = time.monotonic()
        if self.listener is not None and not self.sid and now >= self.retry_at:
            try:
                sub = gena.subscribe(self.url, self.listener.callback, self.config.timeout)
            except RouterError as exc:
                self.retry_at = now + EVENTS_RETRY
                self.log.warning(f"the router refused an event subscription ({exc}); polling every interval")
            else:
                self.sid, self.next_renewal = sub.sid, now + sub.seconds / 2
                self.log.info(f"subscribed to router events at {self.url} for {sub.seconds}s")
        elif self.sid and now >= self.next_renewal:
            try:
                sub = gena.renew(self.url, self.sid, self.config.timeout)
                self.next_renewal = now + sub.seconds / 2
            except RouterError as exc:
                self.log.warning(f"the router forgot the event subscription ({exc}); resubscribing")
                self.sid, self.next_renewal = "", float("inf")
                self._reconcile()
        with self._lock:
            due, self._due = self._due, None
        return due

    def _on_event(self, event: Any) -> None:
        with self._lock:
            self.last_event = time.time()
            # The first event of a subscription is the initial state, not a change.
            if event.seq > 0:
                self._due = time.monotonic() + EVENT_SETTLE
        self._wake()

    def forget(self) -> None:
        self.sid, self.next_renewal, self.retry_at = "", float("inf"), 0.0

    def close(self) -> None:
        if self.sid:
            from ..backends import gena

            with contextlib.suppress(RouterError):  # the router drops it when it runs out anyway
                gena.unsubscribe(self.url, self.sid, self.config.timeout)
        if self.listener is not None:
            self.listener.stop()
        self.listener, self.sid, self.next_renewal = None, "", float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "subscribed": bool(self.sid),
            "eventURL": self.url or None,
            "lastEvent": st.stamp(self.last_event) if self.last_event else None,
        }
