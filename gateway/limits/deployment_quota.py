"""Per-deployment quotas (`backends[].limits`): a remote API's own RPM/TPM, so the gateway slows
down before the upstream answers 429.

Unlike key/team/model limits (the limits phase, before routing) a quota belongs to the deployment,
so it is taken in dispatch once a deployment is picked and before the attempt is sent: one `admit`
on the limits store (in memory, or the Redis script when `[redis]` is set: one round trip, shared by
every gateway process, behind the same fail policy). A refused deployment is marked `quota_until`
(skipped by policies/filters.available like a cooling-down one) and the request picks again, so
traffic moves to other deployments or fallback aliases; when none has quota left the client gets
429 `rate_limit_exceeded` with Retry-After = seconds until the soonest deployment has quota.

Tokens: an attempt is charged the request's estimate (the limits phase's reservation when it ran,
else prompt + output allowance counted here) and corrected to the usage the upstream reports when the
attempt ends (refund or extra). An attempt that never reached the upstream (connection refused) is
refunded its tokens; one that reached it without reporting usage keeps the estimate. Requests are
never refunded: the upstream counted them.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.limits import estimate
from gateway.limits.store import BucketCheck, MemoryStore, Store

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.runtime import Gateway


@dataclass(slots=True, frozen=True)
class QuotaBucket:
    key: str
    kind: str  # "requests" | "tokens"
    rate: float  # per second
    capacity: float


@dataclass(slots=True)
class QuotaCharge:
    """What one attempt took from its deployment's buckets (settled when the attempt ends)."""

    store: Any
    deployment: str
    checks: list[BucketCheck]
    kinds: list[str]
    tokens: int


class DeploymentQuotas:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        cfg = gw.config
        prefix = cfg.redis.key_prefix + "lim:" if cfg.redis is not None else ""
        self.buckets: dict[str, tuple[QuotaBucket, ...]] = {}
        self.deployments: dict[str, list["Deployment"]] = {}  # name -> its Deployment objects (one per alias)
        self.refused_kind: dict[str, str] = {}  # name -> kind of the bucket that refused last
        for route in gw.router.routes():
            for d in route.deployments:
                q = d.backend.config.limits
                if q is None:
                    continue
                self.deployments.setdefault(d.name, []).append(d)
                if d.name in self.buckets:
                    continue
                base = f"{prefix}{{d:{d.name}}}:dq"  # one hash tag per deployment (Redis Cluster slot)
                burst = q.burst or 1.0
                self.buckets[d.name] = tuple(
                    QuotaBucket(f"{base}:{kind[:3]}:{d.name}", kind, per_minute / 60.0, per_minute * burst)
                    for kind, per_minute in (("requests", q.requests_per_minute), ("tokens", q.tokens_per_minute))
                    if per_minute)
        self.store: Store = gw.limits.store if gw.limits is not None else self._own_store()
        self.default_max_tokens = cfg.limits.default_max_tokens if cfg.limits else 4096
        self.counters: dict[str, estimate.Counter] = {}

    def _own_store(self) -> Store:
        gw, cfg = self.gw, self.gw.config
        memory = MemoryStore()
        if gw.redis is None:
            return memory
        from gateway.limits.failover import FailoverStore
        from gateway.limits.redis_store import RedisStore
        policy = cfg.limits.fail_policy if cfg.limits else "open"
        retry = cfg.limits.retry_redis_after_s if cfg.limits else 1.0
        return FailoverStore(RedisStore(gw.redis), memory, policy == "open", retry, self._store_fault)

    def _store_fault(self, op: str, e: BaseException) -> None:
        self.gw.metrics.count(self.gw.metrics.limits_store_errors, op)
        self.gw.log.warning("limits_store_unreachable", op=op, error=type(e).__name__, scope="deployment")

    async def start(self) -> None:
        """Tokenizers for the estimate, when no limits phase makes it (blocking load: executor)."""
        if self.gw.limits is not None or not any(b.kind == "tokens" for bs in self.buckets.values() for b in bs):
            return
        names = {estimate.encoding_for(r.alias) for r in self.gw.router.routes()}
        self.counters = await asyncio.get_running_loop().run_in_executor(None, estimate.load_counters, names)

    def covers(self, routes: list[Any]) -> bool:
        return any(d.name in self.buckets for r in routes for d in r.deployments)

    async def estimate_tokens(self, ctx: RequestContext) -> int:
        r = ctx.limits
        if r is not None and hasattr(r, "prompt"):  # the limits phase's reservation
            return int(r.prompt + r.allowance)
        count = self.counters.get(estimate.encoding_for(ctx.model), estimate.bytes_counter)
        if len(ctx.body) > 32_000:
            prompt = await asyncio.get_running_loop().run_in_executor(
                None, estimate.prompt_tokens, ctx.endpoint, ctx.payload, count)
        else:
            prompt = estimate.prompt_tokens(ctx.endpoint, ctx.payload, count)
        return prompt + estimate.output_allowance(ctx.endpoint, ctx.payload, self.default_max_tokens)

    def settle(self, charge: QuotaCharge, used_tokens: int | None) -> None:
        """used_tokens: what the upstream reported (prompt + completion), 0 = never reached it,
        None = unknown (the estimate stays charged)."""
        if used_tokens is None or used_tokens == charge.tokens:
            return
        delta = float(charge.tokens - used_tokens)
        buckets = [(c, delta) for c, kind in zip(charge.checks, charge.kinds) if kind == "tokens"]
        if buckets:
            self.gw.spawn(self._settle(charge.store, buckets, charge.deployment if delta > 0 else None))

    async def _settle(self, store: Store, buckets: list[tuple[BucketCheck, float]], refunded: str | None) -> None:
        try:
            await store.settle(buckets, [], [])
        except Exception:
            self.gw.log.exception("deployment_quota_settle_failed")
            return
        if refunded is not None:  # tokens came back: a deployment marked over quota may have room now
            for d in self.deployments.get(refunded, ()):
                d.quota_until = 0.0


class RequestQuota:
    """One request's dealings with deployment quotas: its token estimate (made once) and the
    deployments whose quota refused it."""

    __slots__ = ("quotas", "ctx", "tokens", "blocked", "kind")

    def __init__(self, quotas: DeploymentQuotas, ctx: RequestContext) -> None:
        self.quotas = quotas
        self.ctx = ctx
        self.tokens: int | None = None
        self.blocked: set[str] = set()
        self.kind = "requests"  # the kind of the last bucket that refused

    async def take(self, d: "Deployment") -> tuple[bool, QuotaCharge | None]:
        """(True, charge) when `d` has quota (charge None: no quota configured); (False, None) when
        it is over: marked quota_until, counted, and excluded for the rest of this request."""
        q = self.quotas
        buckets = q.buckets.get(d.name)
        if not buckets:
            return True, None
        if self.tokens is None and any(b.kind == "tokens" for b in buckets):
            self.tokens = await q.estimate_tokens(self.ctx)
        tokens = self.tokens or 0
        checks = [BucketCheck(b.key, b.rate, b.capacity, 1 if b.kind == "requests" else tokens) for b in buckets]
        admission = await q.store.admit(checks, [], [])
        if admission.ok:
            return True, QuotaCharge(admission.store or q.store, d.name, checks, [b.kind for b in buckets], tokens)
        i = int(admission.failed.partition(":")[2] or 0)
        self.kind = q.refused_kind[d.name] = buckets[i].kind
        d.quota_until = max(d.quota_until, time.monotonic() + admission.retry_after_s)
        self.blocked.add(d.name)
        q.gw.metrics.count(q.gw.metrics.deployment_quota_skips, d.name)
        return False, None

    def refusal(self, alias: str, wait: float) -> GatewayError:
        """Every deployment that could serve is over its quota: 429 like any rate limit."""
        team = self.ctx.principal.team if self.ctx.principal else ""
        if not self.blocked:  # refused by earlier requests' marks: say what they hit
            now = time.monotonic()
            kinds = [self.quotas.refused_kind.get(n, "requests") for n, ds in self.quotas.deployments.items()
                     if any(d.quota_until > now for d in ds)]
            self.kind = "requests" if "requests" in kinds or not kinds else "tokens"
        m = self.quotas.gw.metrics
        m.count(m.rate_limited, "deployment", team)
        seconds = max(1, math.ceil(wait))
        return GatewayError(
            429, f"Rate limit reached for {self.kind} per minute on every deployment of model `{alias}` (and its "
            f"fallbacks): their upstream quotas are used up. Please try again in {seconds}s.",
            type=self.kind, code="rate_limit_exceeded", headers={"Retry-After": str(seconds)})


def quota_blocked(routes: list[Any]) -> bool:
    """Some deployment of these routes is waiting for its quota to refill."""
    now = time.monotonic()
    return any(d.quota_until > now for r in routes for d in r.deployments)


def build_quotas(gw: "Gateway") -> DeploymentQuotas | None:
    if not any(b.limits is not None for b in gw.config.backends):
        return None
    quotas = DeploymentQuotas(gw)
    return quotas if quotas.buckets else None
