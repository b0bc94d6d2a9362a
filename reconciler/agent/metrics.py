"""The agent's Prometheus metrics, in a registry of its own (several agents can live in one process)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .status import InventoryEntry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAPPING_STATES = ("owned", "declared", "foreign", "conflict")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.duration = Histogram(
            "portctl_reconcile_duration_seconds",
            "Time one reconcile took: fetch, read, plan, apply and read back.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.reconciles = Counter(
            "portctl_reconcile", "Reconciles by result: unchanged, changed or failed.", ["result"], registry=r
        )
        self.mappings = Gauge(
            "portctl_mappings", "Router mappings by state, as of the last read.", ["state"], registry=r
        )
        self.lease_expiry = Gauge(
            "portctl_lease_expiry_timestamp_seconds",
            "When each owned mapping's lease runs out (absent: permanent).",
            ["mapping"],
            registry=r,
        )
        self.requests = Counter(
            "portctl_igd_requests",
            "Requests sent to the router, by action and UPnP error code ('' when it succeeded).",
            ["action", "upnp_error"],
            registry=r,
        )
        self.errors = Counter(
            "portctl_errors",
            "Errors by reason: each failed pass, a revision that failed to load, a check between passes that failed.",
            ["reason"],
            registry=r,
        )
        self.router_restarts = Counter(
            "portctl_router_restarts",
            "Restarts of the router noticed: its boot id changed or its boot moment moved forward.",
            registry=r,
        )
        self.drift_mappings = Gauge(
            "portctl_drift_mappings",
            "Owned router mappings that drifted (changed or gone) and were left so (drift: warn), as of the last pass.",
            registry=r,
        )
        self.drift_detected = Counter(
            "portctl_drift_detected",
            "Drift of warn mappings noticed: once each time a mapping drifts (or drifts otherwise), not every pass.",
            registry=r,
        )
        self.last_success = Gauge(
            "portctl_last_success_timestamp_seconds", "When a reconcile last converged the router.", registry=r
        )
        self.info = Gauge(
            "portctl_info",
            "The revision in force and the router (UDN) it is applied to.",
            [
                "revision",
                "router",
            ],
            registry=r,
        )
        # Per followed manifest (the totals above stay as they were): its file is the label.
        self.manifest_mappings = Gauge(
            "portctl_manifest_mappings",
            "Router mappings one followed manifest owns, declares or could not place, as of the last read.",
            ["manifest", "state"],
            registry=r,
        )
        self.manifest_ready = Gauge(
            "portctl_manifest_ready",
            "1 when the last pass converged the router to this manifest, else 0.",
            ["manifest"],
            registry=r,
        )
        self.manifest_drift = Gauge(
            "portctl_manifest_drift_mappings",
            "Owned mappings of this manifest that drifted and were left so (drift: warn), as of the last pass.",
            ["manifest"],
            registry=r,
        )
        self._manifests: set[str] = set()
        for state in MAPPING_STATES:
            self.mappings.labels(state).set(0)
        for result in ("unchanged", "changed", "failed"):
            self.reconciles.labels(result)
        self._leases: set[str] = set()
        self._info: tuple[str, str] | None = None

    def request(self, action: str, error: str) -> None:
        self.requests.labels(action, error).inc()

    def set_inventory(self, inventory: Iterable[InventoryEntry]) -> None:
        """Expiry gauges for exactly the mappings owned now; gone ones disappear."""
        current: set[str] = set()
        for e in inventory:
            label = f"{e.name} {e.mapping}"
            if e.expires:
                current.add(label)
                self.lease_expiry.labels(label).set(e.expires)
        for label in self._leases - current:
            self.lease_expiry.remove(label)
        self._leases = current

    def set_manifest(self, manifest: str, *, owned: int, declared: int, conflict: int, ready: bool, drift: int) -> None:
        self._manifests.add(manifest)
        for state, count in (("owned", owned), ("declared", declared), ("conflict", conflict)):
            self.manifest_mappings.labels(manifest, state).set(count)
        self.manifest_ready.labels(manifest).set(1 if ready else 0)
        self.manifest_drift.labels(manifest).set(drift)

    def keep_manifests(self, manifests: Iterable[str]) -> None:
        """Forget the series of manifests no longer followed (a file left the directory)."""
        for gone in self._manifests - set(manifests):
            for state in ("owned", "declared", "conflict"):
                self.manifest_mappings.remove(gone, state)
            self.manifest_ready.remove(gone)
            self.manifest_drift.remove(gone)
        self._manifests &= set(manifests)

    def set_info(self, revision: str, router: str) -> None:
        if self._info == (revision, router):
            return
        if self._info:
            self.info.remove(*self._info)
        self.info.labels(revision, router).set(1)
        self._info = (revision, router)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
