"""local-first: local engines first (their cost is 0); remote deployments only when every local
engine is saturated, and back to local as soon as one recovers.

A local engine (backends[].local, by default the GPU engine kinds) is saturated when its load
(backends/load_signals.py) says so: more than `max_waiting` requests waiting, KV cache use at or
above `max_kv_usage`, or a stale reading (stale = busy). One at its `max_concurrency` or down never
reaches the policy (policies/filters.py). Among the unsaturated local engines, and among the remote
ones when spilling, the `then` policy picks (least-active by default). Every spill to a remote
deployment is counted in switchyard_spillover_total{model}. When nothing remote can serve, the
least loaded local engine takes the request (a queue beats a refusal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from policies.base import BasePolicy
from policies.options import LocalFirstOptions

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


class LocalFirst(BasePolicy):
    options_model = LocalFirstOptions

    def __init__(
        self,
        options: LocalFirstOptions | None = None,
        *,
        alias: str = "",
        metrics: Any = None,
        weights: Any = None,
        **_: object,
    ) -> None:
        from policies import make_policy

        self.opts = options or LocalFirstOptions()
        self._alias, self._metrics = alias, metrics
        self._then = make_policy(self.opts.then, alias=alias, metrics=metrics, weights=weights)

    def saturated(self, d: "Deployment") -> bool:
        load = d.load()
        return (
            load.stale
            or load.waiting > self.opts.max_waiting
            or (load.kv_usage is not None and load.kv_usage >= self.opts.max_kv_usage)
        )

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        local = [d for d in candidates if d.backend.local]
        ready = [d for d in local if not self.saturated(d)]
        if ready:
            return self._then.choose(ready, ctx)
        remote = [d for d in candidates if not d.backend.local]
        if remote:
            if self._metrics is not None:
                self._metrics.count(self._metrics.spillover, self._alias)
            return self._then.choose(remote, ctx)
        return min(local, key=lambda d: d.load().requests)

    def on_start(self, deployment: "Deployment", ctx: "RequestContext") -> None:
        self._then.on_start(deployment, ctx)

    def on_finish(self, deployment: "Deployment", ctx: "RequestContext") -> None:
        self._then.on_finish(deployment, ctx)
