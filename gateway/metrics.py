"""Prometheus metrics, on a registry owned by the app (no global state; several gateways can run in
one process, as tests do). Label values are bounded: model aliases, deployments, teams, status
codes; never keys or session ids.

`labels()` lookups cost a dict probe and a lock in prometheus-client; the hot path caches the child
objects per label tuple (`_child`) so a request pays for the increments only.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.context import RequestContext

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._extensions: dict[str, Any] = {}
        r = self.registry
        self.requests = Counter(
            "switchyard_requests",
            "Requests answered, by model alias, deployment, team and HTTP status.",
            ["model", "deployment", "team", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds",
            "Whole request time, arrival to last byte.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "switchyard_time_to_first_token_seconds",
            "Arrival to the first body byte sent to the client.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "switchyard_tokens",
            "Tokens reported by upstreams, by model, team and kind (prompt|completion).",
            ["model", "team", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "switchyard_deployment_in_flight",
            "Requests in flight on a deployment (until the body ends).",
            ["deployment"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backend_up = Gauge(
            "switchyard_backend_up",
            "1 when the backend's last health probe succeeded.",
            ["backend"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_errors = Counter(
            "switchyard_upstream_errors",
            "Upstream faults by deployment and kind (connect, timeout, status, broken_stream).",
            ["deployment", "kind"],
            registry=r,
        )
        # Resilience (gateway/resilience.py, gateway/dispatch.py).
        self.breaker_state = Gauge(
            "switchyard_breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 open, 2 half-open.",
            ["deployment"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "switchyard_breaker_transitions",
            "Circuit breaker state changes.",
            ["deployment", "from_state", "to_state"],
            registry=r,
        )
        self.breaker_rejections = Counter(
            "switchyard_breaker_rejections",
            "Requests kept off a deployment because its breaker did not admit them.",
            ["deployment"],
            registry=r,
        )
        self.retries = Counter(
            "switchyard_retries",
            "Retries sent, by model alias and the reason (connect, timeout, status_NNN).",
            ["model", "reason"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "switchyard_retry_budget_exhausted",
            "Retries not sent because the retry budget was spent.",
            ["model"],
            registry=r,
        )
        self.fallbacks = Counter(
            "switchyard_fallbacks",
            "Requests answered by a fallback alias.",
            ["model", "fallback"],
            registry=r,
        )
        self.hedges = Counter(
            "switchyard_hedges",
            "Hedged requests, by model and which copy won (primary|hedge).",
            ["model", "winner"],
            registry=r,
        )
        self.broken_streams = Counter(
            "switchyard_broken_streams",
            "Streams that broke after their first byte reached the client.",
            ["deployment"],
            registry=r,
        )
        self.upstream_attempts = Counter(
            "switchyard_upstream_attempts",
            "Requests sent upstream (first tries, retries, hedges).",
            ["deployment"],
            registry=r,
        )
        # Routing (issue 4): engine load signals (backends/load_signals.py) and policy decisions (policies/).
        self.load_waiting = Gauge(
            "switchyard_deployment_requests_waiting",
            "Requests waiting in the engine's queue (its /metrics, or 0).",
            ["deployment"],
            registry=r,
        )
        self.load_running = Gauge(
            "switchyard_deployment_requests_running",
            "Requests the engine is running (its /metrics, or the gateway's in-flight count).",
            ["deployment"],
            registry=r,
        )
        self.load_kv = Gauge(
            "switchyard_deployment_kv_cache_usage_ratio",
            "Share of the engine's KV cache in use, 0..1 (engines that export it).",
            ["deployment"],
            registry=r,
        )
        self.load_stale = Gauge(
            "switchyard_deployment_load_stale",
            "1 when the engine's last load reading is stale (routing treats it as busy).",
            ["deployment"],
            registry=r,
        )
        self.spillover = Counter(
            "switchyard_spillover",
            "local-first: requests sent to a remote deployment because every local engine was saturated.",
            ["model"],
            registry=r,
        )
        self.session_moves = Counter(
            "switchyard_session_moves",
            "session-affinity: sessions moved off their pinned deployment (down, full or over the load bound).",
            ["model"],
            registry=r,
        )
        self.prefix_routing = Counter(
            "switchyard_prefix_routing",
            "prefix-aware: routing decisions by kind (cache = longest prefix, balance, spread).",
            ["model", "decision"],
            registry=r,
        )
        # Rate limits, budgets, spend (gateway/limits/).
        self.spend_usd = Counter(
            "switchyard_spend_usd",
            "Settled cost in USD, by team and model alias.",
            ["team", "model"],
            registry=r,
        )
        self.rate_limited = Counter(
            "switchyard_rate_limited",
            "Requests refused with 429 by a rate limit, by the limit's scope (key|team|model|deployment) and the caller's team.",
            ["scope", "team"],
            registry=r,
        )
        self.budget_refused = Counter(
            "switchyard_budget_refused",
            "Requests refused with 429 budget_exceeded (hard budget), by team.",
            ["team"],
            registry=r,
        )
        self.budget_soft_alerts = Counter(
            "switchyard_budget_soft_alerts",
            "Soft budget limits passed (alert raised), by team.",
            ["team"],
            registry=r,
        )
        self.limits_store_errors = Counter(
            "switchyard_limits_store_errors",
            "Redis failures of the limits store, by operation (admit|settle|spend); the fail policy applied.",
            ["op"],
            registry=r,
        )
        # Per-deployment quotas (backends[].limits, gateway/limits/deployment_quota.py).
        self.deployment_quota_skips = Counter(
            "switchyard_deployment_quota_skips",
            "Deployments passed over for a request because their upstream quota (backends[].limits) was used up.",
            ["deployment"],
            registry=r,
        )
        # Operations (gateway/reload.py, issue 8).
        self.config_reloads = Counter(
            "switchyard_config_reloads",
            "Config reloads (SIGHUP, POST /admin/reload) by result (ok|rejected).",
            ["result"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def extension(self, name: str, factory: Any) -> Any:
        """A feature's own metric set, built once per registry (`factory(self)`): a reload that
        builds a new Gateway on the same Metrics gets the same set instead of registering twice."""
        ext = self._extensions.get(name)
        if ext is None:
            ext = self._extensions[name] = factory(self)
        return ext

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def in_flight_for(self, deployment: str) -> Any:
        return self._child(self.in_flight, deployment)

    def count(self, metric: Any, *labels: str) -> None:
        """Increment a labelled counter through the child cache."""
        self._child(metric, *labels).inc()

    def spend_child(self, team: str, model: str) -> Any:
        return self._child(self.spend_usd, team, model)

    def upstream_error(self, deployment: str, kind: str) -> None:
        self._child(self.upstream_errors, deployment, kind).inc()

    def set_load(self, deployment: str, load: Any) -> None:
        """Re-export one deployment's Load (backends.load_signals.Load) as gauges."""
        self._child(self.load_waiting, deployment).set(load.waiting)
        self._child(self.load_running, deployment).set(load.running)
        if load.kv_usage is not None:
            self._child(self.load_kv, deployment).set(load.kv_usage)
        self._child(self.load_stale, deployment).set(1 if load.stale else 0)

    def observe(self, ctx: RequestContext) -> None:
        team = ctx.principal.team if ctx.principal else ""
        model = ctx.model if ctx.route is not None else ""  # unknown aliases stay out of label values
        deployment = ctx.deployment.name if ctx.deployment else ""
        self._child(self.requests, model, deployment, team, str(ctx.status)).inc()
        if ctx.route is None:
            return
        if ctx.latency_s is not None:
            self._child(self.latency, model).observe(ctx.latency_s)
        if ctx.ttft_s is not None and 200 <= ctx.status < 300:
            self._child(self.ttft, model).observe(ctx.ttft_s)
        if ctx.usage.known and ctx.deployment is not None:  # upstream tokens only (a cache hit used none)
            self._child(self.tokens, model, team, "prompt").inc(ctx.usage.prompt_tokens)
            self._child(self.tokens, model, team, "completion").inc(ctx.usage.completion_tokens)

    def render(self) -> bytes:
        """This gateway's metrics; under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set, see
        gateway/workers.py) the sum over every worker, read from the shared directory."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            aggregated = CollectorRegistry()
            MultiProcessCollector(aggregated)
            return generate_latest(aggregated)
        return generate_latest(self.registry)
