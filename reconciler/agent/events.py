"""The GENA subscription to the router's connection service, kept alive by the agent's loop.

A listener on the interface towards the router hears NOTIFYs; `tend()` (called by the loop)
subscribes, renews at half the granted time, and reports when an event asks for a reconcile.
A router that restarted has forgotten its subscribers without a word, so the subscription is made
again when the loop sees the router restart (`lost()`), when a renewal is refused (412) or fails,
and every re-made subscription is followed by a reconcile: events were missed meanwhile. Routers
without events, or that refuse SUBSCRIBE, are polled at the interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..backends.base import Backend, EventSource
from ..backends.http import Observer
from ..errors import RouterError, RouterUnreachable
from . import status as st
from .config import AgentConfig
from .logs import JsonLog

EVENT_SETTLE = 0.3  # events come in bursts (one per row of an apply): reconcile once after the burst
EVENTS_RETRY = 300.0  # how long to poll before asking a router that refused events again
FIRST_RETRY = 2.0  # a router that did not answer SUBSCRIBE (restarting?) is asked again soon, then less often


class Events:
    """The GENA subscription: a listener on the interface towards the router, subscribed and renewed.

    Any event makes the agent reconcile shortly after; so does a subscription made again after
    one was lost (the router restarted, or a renewal failed).
    """

    def __init__(
        self,
        config: AgentConfig,
        log: JsonLog,
        reconcile: Callable[[], object],
        wake: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        observe: Observer | None = None,
    ) -> None:
        self.config = config
        self.observe = observe  # sees every SUBSCRIBE and UNSUBSCRIBE (--trace)
        self.log = log
        self.clock = clock
        self.wall = wall
        self._reconcile = reconcile
        self._wake = wake
        self.listener: Any = None  # gena.EventListener, imported only when events are used
        self.sid = ""
        self.url = ""
        self.next_renewal = float("inf")
        self.retry_at = 0.0
        self.last_event = 0.0
        self.changes_heard = 0  # events that announced a change (not a subscription's initial state)
        self.subscribed_at: float | None = None  # the clock when the current SID was granted
        self.last_renewal = 0.0  # wall clock of the last SUBSCRIBE the router granted (new or renewal)
        self._failures = 0  # SUBSCRIBEs in a row the router did not answer
        self._lost = False  # a subscription was lost: re-making it calls for a reconcile
        self._due: float | None = None
        self._lock = threading.Lock()

    @property
    def live(self) -> bool:
        """Subscribed, as far as anything the router said tells: no restart seen, no renewal refused."""
        return bool(self.sid)

    @property
    def next_due(self) -> float:
        """When tend() has work: a renewal, or another attempt to subscribe."""
        if self.sid:
            return self.next_renewal
        return self.retry_at if self.listener is not None else float("inf")

    def attach(self, backend: Backend) -> None:
        """Use `backend`'s router from now on (subscribing happens in `tend`)."""
        url = ""
        if self.config.events and backend.capabilities.sends_events and isinstance(backend, EventSource):
            url = backend.event_url()
        if url == self.url and self.listener is not None:
            return
        self.close()
        self.url, self.retry_at, self._failures = url, 0.0, 0
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
        now = self.clock()
        if self.listener is not None and not self.sid and now >= self.retry_at:
            self._subscribe(now)
        elif self.sid and now >= self.next_renewal:
            self._renew(now)
        with self._lock:
            due, self._due = self._due, None
        return due

    def _subscribe(self, now: float) -> None:
        from ..backends import gena

        try:
            sub = gena.subscribe(self.url, self.listener.callback, self.config.timeout, self.observe)
        except RouterUnreachable as exc:
            # Most likely restarting: ask again soon, backing off towards the long retry.
            self._failures += 1
            wait = min(EVENTS_RETRY, FIRST_RETRY * 2 ** (self._failures - 1))
            self.retry_at = now + wait
            self.log.warning(f"the router did not answer an event subscription ({exc}); trying again in {wait:g}s")
        except RouterError as exc:
            self.retry_at = now + EVENTS_RETRY
            self.log.warning(f"the router refused an event subscription ({exc}); polling every interval")
        else:
            self._granted(sub.sid, sub.seconds, now)
            self.log.info(f"subscribed to router events at {self.url} for {sub.seconds}s")
            if self._lost:
                # Whatever changed while nobody was listening was not evented: look at the table.
                self._lost = False
                self._reconcile()

    def _renew(self, now: float) -> None:
        from ..backends import gena

        try:
            sub = gena.renew(self.url, self.sid, self.config.timeout, self.observe)
        except RouterError as exc:
            # 412: the router forgot the SID (it restarted). No answer: the subscription may be
            # gone as well. Either way subscribe afresh and reconcile, rather than trust it.
            self.log.warning(f"the event subscription could not be renewed ({exc}); subscribing again")
            self.lost()
            self._reconcile()
        else:
            self._granted(self.sid, sub.seconds, now, renewal=True)

    def _granted(self, sid: str, seconds: int, now: float, *, renewal: bool = False) -> None:
        if not renewal:
            self.subscribed_at = now
        self.sid, self.next_renewal, self._failures = sid, now + seconds / 2, 0
        self.last_renewal = self.wall()

    def _on_event(self, event: Any) -> None:
        with self._lock:
            self.last_event = self.wall()
            # The first event of a subscription is the initial state, not a change.
            if event.seq > 0:
                self.changes_heard += 1
                self._due = self.clock() + EVENT_SETTLE
        self._wake()

    def lost(self) -> None:
        """The router has forgotten the subscription (it restarted): make a new one at the next tend()."""
        if self.sid or self.listener is not None:
            self._lost = True
        self.sid, self.next_renewal, self.retry_at, self.subscribed_at = "", float("inf"), 0.0, None
        self._failures = 0

    def forget(self) -> None:
        self.lost()

    def close(self) -> None:
        if self.sid:
            from ..backends import gena

            with contextlib.suppress(RouterError):  # the router drops it when it runs out anyway
                gena.unsubscribe(self.url, self.sid, self.config.timeout, self.observe)
        if self.listener is not None:
            self.listener.stop()
        self.listener, self.sid, self.next_renewal, self.subscribed_at = None, "", float("inf"), None
        self._lost = False

    def to_json(self) -> dict[str, Any]:
        age = self.clock() - self.subscribed_at if self.sid and self.subscribed_at is not None else None
        return {
            "live": self.live,
            "subscribed": bool(self.sid),
            "sid_age": round(age, 1) if age is not None else None,
            "lastRenewal": st.stamp(self.last_renewal) if self.last_renewal else None,
            "eventURL": self.url or None,
            "lastEvent": st.stamp(self.last_event) if self.last_event else None,
            "changesHeard": self.changes_heard,
        }
