"""Resilience state held by the Gateway: breakers on every deployment, the retry budget, backoff,
Retry-After parsing, per-model settings (fallbacks, time to first byte, hedging).

The dispatcher (gateway/dispatch.py) asks this object what to do; it keeps no per-request state.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from backends.breaker import STATE_VALUE, CircuitBreaker

if TYPE_CHECKING:
    from backends.base import Backend
    from gateway.config import Config
    from gateway.metrics import Metrics
    from gateway.resilience_config import ResilienceConfig
    from gateway.routing import Router


class RetryBudget:
    """Retries allowed over a sliding window: `ratio` of the requests seen in it, plus `min_retries`
    (so a quiet gateway can still retry). Ten buckets of window/10; an injectable clock."""

    def __init__(
        self, ratio: float, min_retries: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.bucket_s = window_s / 10
        self.clock = clock
        self._buckets: list[list[int]] = []  # [bucket index, requests, retries]

    def _bucket(self) -> list[int]:
        idx = math.floor(self.clock() / self.bucket_s)
        while self._buckets and self._buckets[0][0] <= idx - 10:
            self._buckets.pop(0)
        if not self._buckets or self._buckets[-1][0] != idx:
            self._buckets.append([idx, 0, 0])
        return self._buckets[-1]

    def record_request(self) -> None:
        self._bucket()[1] += 1

    def try_spend(self) -> bool:
        """Take one retry if the budget allows it."""
        current = self._bucket()
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries >= math.floor(self.ratio * requests + 1e-9) + self.min_retries:
            return False
        current[2] += 1
        return True


def backoff_s(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(retry-1)))."""
    return rng.uniform(0.0, min(cap, base * (2 ** max(0, retry - 1))))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds (may be fractional) or an HTTP date. None if absent or bad."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class ModelSettings:
    fallbacks: tuple[str, ...] = ()
    ttfb_s: float | None = None
    hedge_after_s: float | None = None


class _BreakerMetrics:
    """Breaker listener: transitions and rejections -> Prometheus, transitions -> the log."""

    def __init__(self, metrics: "Metrics", log: object) -> None:
        self.metrics = metrics
        self.log = log

    def transition(self, name: str, old: str, new: str) -> None:
        self.metrics.breaker_state.labels(name).set(STATE_VALUE[new])
        self.metrics.breaker_transitions.labels(name, old, new).inc()
        self.log.warning("breaker_transition", deployment=name, from_state=old, to_state=new)  # type: ignore[attr-defined]

    def rejected(self, name: str) -> None:
        self.metrics.breaker_rejections.labels(name).inc()


class Resilience:
    def __init__(self, config: "Config", router: "Router", metrics: "Metrics", log: object) -> None:
        self.cfg: ResilienceConfig = config.resilience
        self.retry_on = frozenset(self.cfg.retry_on)
        self.rng = random.Random()
        self.budget = RetryBudget(self.cfg.budget_ratio, self.cfg.budget_min_retries, self.cfg.budget_window_s)
        self.settings: dict[str, ModelSettings] = {
            m.name: ModelSettings(tuple(m.fallbacks), m.ttfb_s, m.hedge_after_s) for m in config.models
        }
        listener = _BreakerMetrics(metrics, log)
        per_backend = {b.name: b.breaker or self.cfg.breaker for b in config.backends}
        self.deployments = list(router.deployments)  # one breaker per deployment, whatever its aliases
        for d in self.deployments:
            d.breaker = CircuitBreaker(d.name, per_backend[d.backend.name], listener=listener)
            metrics.breaker_state.labels(d.name).set(0)
            metrics.in_flight_for(d.name)  # every deployment's series exists from the start

    def model(self, alias: str) -> ModelSettings:
        return self.settings.get(alias) or ModelSettings()

    def on_backend_health(self, backend: "Backend") -> None:
        """A probe saw `backend` come back up: its open breakers go half-open now."""
        if backend.healthy:
            for d in self.deployments:
                if d.backend is backend and d.breaker is not None:
                    d.breaker.probe_recovered()

    def backoff(self, retry: int) -> float:
        return backoff_s(retry, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        out = []
        for d in self.deployments:
            row: dict[str, object] = {
                "deployment": d.name,
                "backend": d.backend.name,
                "healthy": d.backend.healthy,
                "cool_down_s": round(max(0.0, d.cool_until - now), 3),
                "active": d.active,
                "quota_wait_s": round(max(0.0, d.quota_until - now), 3),  # backends[].limits
            }
            if d.breaker is not None:
                row.update(d.breaker.snapshot())
            out.append(row)
        return out
