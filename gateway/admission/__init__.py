"""Agent-aware admission: priority classes, the admission queue with least-attained-service
fairness, saturation of engines, and the priority passed on to engines that schedule by it.

    Admission (on the Gateway as `gw.admission`; None when `[admission].enabled = false`)
      .admit(ctx, candidates) -> Pick    called by dispatch when no candidate has room now
      .on_release(deployment)            an attempt ended: its slot may go to a waiter
      .account(ctx)                      an answered attempt's tokens count toward its session

Files: config.py (the `[admission]` schema), priority.py (classes, key/team defaults and ceilings),
service.py (attained service per session, memory or Redis), queue.py (the queue), metrics.py.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from gateway.admission.config import CLASSES, AdmissionConfig
from gateway.admission.metrics import AdmissionMetrics
from gateway.admission.priority import Priorities
from gateway.admission.queue import AdmissionQueue
from gateway.admission.service import MemoryService, RedisService, session_of

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext
    from gateway.runtime import Gateway
    from gateway.selection import Candidates, Pick

QUEUE_HEADER = "x-switchyard-queue-ms"


class Admission:
    def __init__(self, gw: "Gateway", cfg: AdmissionConfig) -> None:
        self.gw = gw
        self.cfg = cfg
        self.metrics: AdmissionMetrics = gw.metrics.extension("admission", AdmissionMetrics)
        fair = cfg.fairness
        if gw.redis is not None and gw.config.redis is not None:
            self.service: Any = RedisService(fair, gw.redis, gw.config.redis.key_prefix, gw.spawn)
        else:
            self.service = MemoryService(fair)
        self.queue = AdmissionQueue(cfg, self.metrics, self.service, gw.log)
        self.output_weight = fair.output_weight
        for backend in gw.backends.values():  # what counts as saturated (backends/deployment.py)
            backend.saturation = cfg.saturation

    async def admit(self, ctx: "RequestContext", candidates: "Candidates") -> "Pick | None":
        """Wait in the queue for a deployment with room; its slot is taken for this request. None
        when waiting is unlikely to help: every candidate is down, or none is expected back (breaker
        re-probe, cool-down, quota refill) within half the class's deadline; the caller then answers
        at once (503, or 429 for quotas) with Retry-After."""
        deadline = self.cfg.max_wait(CLASSES[ctx.priority])
        if self.queue.expected_wait(candidates) > deadline / 2:
            return None
        started = time.monotonic()
        session = session_of(ctx)
        candidates.forget_quota_refusals()  # while it waits, a quota refill (quota_until) lets it in
        try:
            while True:
                grant = await self.queue.wait(ctx, candidates, session)
                pick = await candidates.claim(grant.route, grant.deployment)
                if pick is not None:
                    return pick
                self.queue.give_back(grant.deployment)  # over its quota after all: wait again
        finally:
            waited = time.monotonic() - started
            ctx.log_fields["queue_ms"] = round(waited * 1000, 2)
            ctx.response_headers[QUEUE_HEADER] = str(math.ceil(waited * 1000))

    def must_queue(self, candidates: "Candidates") -> bool:
        """Others already wait for these deployments: a new request goes behind them."""
        return self.queue.has_waiters_for(candidates)

    def on_release(self, d: "Deployment") -> None:
        self.queue.on_release(d)  # the saturation gauges follow the load readings (on_load), not each request

    def account(self, ctx: "RequestContext") -> None:
        u = ctx.usage
        if u.known:
            self.service.add(session_of(ctx), u.prompt_tokens + self.output_weight * u.completion_tokens)

    def on_load(self) -> None:
        for d in self.gw.router.deployments:
            self.metrics.set_saturated(d.name, not d.has_capacity())
        if self.queue.count:
            self.queue.pump()

    async def close(self) -> None:
        await self.queue.close()

    def status(self) -> dict[str, Any]:
        return self.queue.snapshot()


def build_admission(gw: "Gateway") -> Admission | None:
    cfg = gw.config.admission
    return Admission(gw, cfg) if cfg.enabled else None


__all__ = ["Admission", "AdmissionConfig", "Priorities", "build_admission"]
