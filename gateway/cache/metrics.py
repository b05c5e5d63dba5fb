"""The caches' Prometheus metrics, registered on the gateway's own registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.metrics import Metrics

LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25)


class CacheMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.m = metrics
        self.hits = Counter(
            "switchyard_cache_hits",
            "Requests answered from a cache, by model and kind (exact|semantic).",
            ["model", "kind"],
            registry=r,
        )
        self.misses = Counter(
            "switchyard_cache_misses", "Cacheable requests that found no entry.", ["model"], registry=r
        )
        self.bypass = Counter(
            "switchyard_cache_bypass",
            "Requests not looked up: reason nondeterministic|no_scope|header.",
            ["model", "reason"],
            registry=r,
        )
        self.stores = Counter(
            "switchyard_cache_stores",
            "Answers stored, by model and kind (exact|semantic).",
            ["model", "kind"],
            registry=r,
        )
        self.not_stored = Counter(
            "switchyard_cache_not_stored",
            "Answers not stored: reason error|incomplete|finish_reason|too_large.",
            ["model", "reason"],
            registry=r,
        )
        self.saved_tokens = Counter(
            "switchyard_cache_saved_tokens",
            "Upstream tokens not spent thanks to hits, by kind (prompt|completion).",
            ["model", "kind"],
            registry=r,
        )
        self.saved_usd = Counter(
            "switchyard_cache_saved_usd",
            "Upstream cost not spent thanks to hits (models with a price).",
            ["model"],
            registry=r,
        )
        self.lookup = Histogram(
            "switchyard_cache_lookup_seconds",
            "Cache lookup time (semantic: embedding + search).",
            ["kind"],
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.entries = Gauge(
            "switchyard_cache_entries", "Entries held in this process, by kind (exact|semantic).", ["kind"], registry=r
        )
        self.bytes = Gauge(
            "switchyard_cache_bytes", "Bytes of cached bodies held by the in-memory exact store.", registry=r
        )

    def count(self, metric: Counter, *labels: str, by: float = 1.0) -> None:
        self.m._child(metric, *labels).inc(by)
