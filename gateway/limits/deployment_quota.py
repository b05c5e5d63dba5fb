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
from gateway.limits.store import BucketCheck, Store
from gateway.limits.stores import build_store, previous_state

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
    def __init__(self, gw: "Gateway", previous: "Gateway | None" = None) -> None:
        self.gw = gw
        cfg = gw.config
        prefix = cfg.redis.key_prefix + "lim:" if cfg.redis is not None else ""
        self.buckets: dict[str, tuple[QuotaBucket, ...]] = {}
        self.deployments: dict[str, Deployment] = {}  # name -> the deployment (one per backend and model)
        self.refused_kind: dict[str, str] = {}  # name -> kind of the bucket that refused last
        for d in gw.router.deployments:
            q = d.backend.config.limits
            if q is None:
                continue
            self.deployments[d.name] = d
            base = f"{prefix}{{d:{d.name}}}:dq"  # one hash tag per deployment (Redis Cluster slot)
            burst = q.burst or 1.0
            self.buckets[d.name] = tuple(
                QuotaBucket(f"{base}:{kind[:3]}:{d.name}", kind, per_minute / 60.0, per_minute * burst)
                for kind, per_minute in (("requests", q.requests_per_minute), ("tokens", q.tokens_per_minute))
                if per_minute
            )
        if gw.limits is not None:
            self.store: Store = gw.limits.store
            self.state = gw.limits.state
        else:
            self.store, self.state = build_store(gw, "deployment", previous_state(gw, previous))
        self.max_reserve_tokens = cfg.limits.max_reserve_tokens if cfg.limits else 32768

    async def start(self) -> None:
        """Tokenizers for the estimate, when no limits phase loads them (it starts first)."""
        if self.gw.limits is not None or not any(b.kind == "tokens" for bs in self.buckets.values() for b in bs):
            return
        await self.gw.estimator.start(self.gw.router.aliases())

    def covers(self, routes: list[Any]) -> bool:
        return any(d.name in self.buckets for r in routes for d in r.deployments)

    async def estimate_tokens(self, ctx: RequestContext) -> int:
        """The limits phase's reservation when it ran (already capped), else the request's estimate
        with each answer capped at `limits.max_reserve_tokens`: a max_tokens of 1e12 must not put a
        deployment over its quota for years."""
        est = await self.gw.estimator.of(ctx)
        if self.gw.limits is not None:
            return est.total
        return est.prompt + min(est.per_answer, self.max_reserve_tokens) * est.answers

    def settle(self, charge: QuotaCharge, used_tokens: int | None) -> None:
        """used_tokens: what the upstream reported (prompt + completion), 0 = never reached it,
        None = unknown (the estimate stays charged)."""
        if used_tokens is None or used_tokens == charge.tokens:
            return
        delta = float(charge.tokens - used_tokens)
        buckets = [(c, delta) for c, kind in zip(charge.checks, charge.kinds) if kind == "tokens"]
        if buckets:
            self.gw.spawn(self._settle(charge.store, buckets, charge.deployment if delta > 0 else None))

    async def refund_late(self, admitting: "asyncio.Future[Any]", checks: list[BucketCheck], kinds: list[str]) -> None:
        """The request was cancelled while its quota was being taken: nothing was sent, so the
        tokens go back once the store answers (the request stays counted, like any attempt)."""
        try:
            admission = await admitting
        except Exception:
            return
        if admission.ok:
            tokens = [(c, float(c.cost)) for c, kind in zip(checks, kinds) if kind == "tokens" and c.cost]
            if tokens:
                await self._settle(admission.store or self.store, tokens, None)

    async def _settle(self, store: Store, buckets: list[tuple[BucketCheck, float]], refunded: str | None) -> None:
        try:
            await store.settle(buckets, [], [])
        except Exception:
            self.gw.log.exception("deployment_quota_settle_failed")
            return
        d = self.deployments.get(refunded) if refunded is not None else None
        if d is not None:  # tokens came back: a deployment marked over quota may have room now
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
        # In a task of its own: a client gone while it is in flight (Redis) gets the tokens back.
        admitting = asyncio.ensure_future(q.store.admit(checks, [], []))
        try:
            admission = await asyncio.shield(admitting)
        except asyncio.CancelledError:
            q.gw.spawn(q.refund_late(admitting, checks, [b.kind for b in buckets]))
            raise
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
            kinds = [
                self.quotas.refused_kind.get(n, "requests")
                for n, d in self.quotas.deployments.items()
                if d.quota_until > now
            ]
            self.kind = "requests" if "requests" in kinds or not kinds else "tokens"
        m = self.quotas.gw.metrics
        m.count(m.rate_limited, "deployment", team)
        seconds = max(1, math.ceil(wait))
        return GatewayError(
            429,
            f"Rate limit reached for {self.kind} per minute on every deployment of model `{alias}` (and its "
            f"fallbacks): their upstream quotas are used up. Please try again in {seconds}s.",
            type=self.kind,
            code="rate_limit_exceeded",
            headers={"Retry-After": str(seconds)},
        )


def quota_blocked(routes: list[Any]) -> bool:
    """Some deployment of these routes is waiting for its quota to refill."""
    now = time.monotonic()
    return any(d.quota_until > now for r in routes for d in r.deployments)


def build_quotas(gw: "Gateway", previous: "Gateway | None" = None) -> DeploymentQuotas | None:
    if not any(b.limits is not None for b in gw.config.backends):
        return None
    quotas = DeploymentQuotas(gw, previous)
    return quotas if quotas.buckets else None
