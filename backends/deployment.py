"""A deployment: one upstream model on one backend, with the load the gateway itself put on it.

There is one object per (backend, upstream model), built by backends/registry.py and shared by every
alias routing to it; per-alias settings (weights) live on the route, not here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from backends.base import Backend
from backends.breaker import CircuitBreaker
from backends.load_signals import Load


@dataclass(eq=False, slots=True)
class Deployment:
    backend: Backend
    upstream_model: str
    active: int = 0  # in-flight on this deployment; drops when the response body ends
    name: str = field(init=False)  # "backend/upstream-model": the label in metrics and logs
    # Resilience: the breaker guarding this deployment (None = none), and the end of a 429
    # cool-down (time.monotonic; the upstream's Retry-After).
    breaker: CircuitBreaker | None = None
    cool_until: float = 0.0
    # Per-deployment quota (backends[].limits, gateway/limits/deployment_quota.py): time.monotonic
    # when its bucket is expected to hold enough again after a refusal.
    quota_until: float = 0.0
    # Hedges this deployment lost with no first byte since its last success (gateway/dispatch.py):
    # from the second in a row they count as breaker failures, so a hung engine that hedging hides
    # from clients still trips its breaker (one lost race alone is only slowness).
    hedge_losses: int = 0
    # Attempts of a preemptible class running here (Batch API lines): their task -> when they
    # started; the admission queue cancels the youngest for a higher class's waiting request.
    preemptible: dict[Any, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = f"{self.backend.name}/{self.upstream_model}"

    def has_capacity(self) -> bool:
        """Not saturated: below max_concurrency and, when the engine's load is read and saturation
        thresholds are set ([admission].saturation), its waiting queue and KV-cache use below them.
        An engine whose reading is stale takes one request at a time (stale counts as busy)."""
        b = self.backend
        limit = b.max_concurrency
        if limit is not None and b.active >= limit:
            return False
        sat, signal = b.saturation, b.load_signal
        if sat is None or signal is None:
            return True
        load = signal.current(b.active)
        if load.stale:
            return b.active == 0 or not sat.stale_busy
        if load.kv_usage is not None and load.kv_usage >= sat.max_kv_usage:
            return False
        return load.waiting < sat.max_waiting

    def allows(self) -> bool:
        """Not in a 429 cool-down nor out of quota, and the breaker admits a request (open -> half-open when due)."""
        if self.cool_until or self.quota_until:
            now = time.monotonic()
            if now < self.cool_until or now < self.quota_until:
                return False
        return self.breaker is None or self.breaker.allows()

    def retry_in(self) -> float:
        """Seconds until this deployment may take a request again (0 = now)."""
        wait = max(0.0, self.cool_until - time.monotonic(), self.quota_until - time.monotonic())
        return max(wait, self.breaker.retry_in()) if self.breaker is not None else wait

    def load(self) -> Load:
        """The engine's load (its /metrics, or the gateway's in-flight count); stale = busy."""
        signal = self.backend.load_signal
        in_flight = self.backend.active
        return signal.current(in_flight) if signal is not None else Load(0.0, float(in_flight))

    def hedge_lost(self) -> str:
        """The breaker outcome of a hedge lost before any first byte: neutral for the first since the
        deployment's last success, a failure for the next ones."""
        self.hedge_losses += 1
        return "neutral" if self.hedge_losses < 2 else "failure"

    def acquire(self) -> None:
        self.active += 1
        self.backend.active += 1

    def release(self) -> None:
        self.active -= 1
        self.backend.active -= 1
