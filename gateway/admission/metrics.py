"""The admission queue's Prometheus metrics (one set per registry: Metrics.extension)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from gateway.metrics import Metrics

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class AdmissionMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.m = metrics
        self.length = Gauge(
            "switchyard_queue_length",
            "Requests waiting in the admission queue, by model and class.",
            ["model", "class"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.wait = Histogram(
            "switchyard_queue_wait_seconds",
            "Time dispatched requests waited in the admission queue, by class.",
            ["class"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.outcomes = Counter(
            "switchyard_queue_requests",
            "Requests that left the admission queue, by model, class and outcome (dispatched|shed|expired|cancelled).",
            ["model", "class", "outcome"],
            registry=r,
        )
        self.saturated = Gauge(
            "switchyard_deployment_saturated",
            "1 while a deployment is saturated (at max_concurrency, or its engine reports a queue / full KV cache).",
            ["deployment"],
            registry=r,
            multiprocess_mode="livemax",
        )

    def queued(self, model: str, cls: str, delta: int) -> None:
        self.m._child(self.length, model, cls).inc(delta)

    def waited(self, cls: str, seconds: float) -> None:
        self.m._child(self.wait, cls).observe(seconds)

    def outcome(self, model: str, cls: str, outcome: str) -> None:
        self.m._child(self.outcomes, model, cls, outcome).inc()

    def set_saturated(self, deployment: str, saturated: Any) -> None:
        self.m._child(self.saturated, deployment).set(1 if saturated else 0)
