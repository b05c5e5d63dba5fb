"""The limits phase: estimate, check the context window, admit (rate limits + budget reservation in
one store call), and settle to the real usage at the end. Also the async API the rest of the gateway
(and the ops helper) reads spend through: `await gateway.limits.spend(team=...)`.

Reservation: TPM buckets are charged prompt estimate + output allowance (max_tokens, else
`limits.default_max_tokens`), budgets the worst-case cost of that; both are corrected at the end to
what the upstream reported (refund or extra). A request that never reached an upstream is refunded in
full; one that reached it without reporting usage (client gone mid-stream) keeps the worst case.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_request
from gateway.limits import estimate, prices
from gateway.limits.alerts import Alerts
from gateway.limits.failover import FailoverStore
from gateway.limits.ledger import Ledger
from gateway.limits.periods import Period, period_of, ttl_of
from gateway.limits.rules import Plan, Planner
from gateway.limits.store import NANO, BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, MemoryStore, Store

if TYPE_CHECKING:
    from gateway.runtime import Gateway

LARGE_PROMPT_CHARS = 32_000  # count bigger prompts in an executor, off the event loop


@dataclass(slots=True)
class Reservation:
    store: Store
    plan: Plan
    buckets: list[BucketCheck]
    budgets: list[BudgetCheck]
    prompt: int
    allowance: int
    cost: int
    price: prices.Price


class LimitsPhase:
    name = "limits"

    def __init__(self, gw: "Gateway") -> None:
        cfg = gw.config
        self.gw = gw
        self.limits = cfg.limits
        self.budgets_cfg = cfg.budgets
        self.tz = ZoneInfo(cfg.budgets.timezone if cfg.budgets else "UTC")
        self.default_max_tokens = cfg.limits.default_max_tokens if cfg.limits else 4096
        self.headers_on = bool(cfg.limits and cfg.limits.rules)
        self.cut_streams = bool(cfg.budgets and cfg.budgets.cut_streams)
        self.ledger: Ledger | None = None
        memory = MemoryStore()
        if gw.redis is not None:
            from gateway.limits.redis_store import RedisStore
            policy = cfg.limits.fail_policy if cfg.limits else "open"
            retry = cfg.limits.retry_redis_after_s if cfg.limits else 1.0
            delay = cfg.limits.settle_delay_s if cfg.limits else 0.0
            self.store: Store = FailoverStore(RedisStore(gw.redis, delay), memory, policy == "open", retry, self._store_fault)
            prefix = cfg.redis.key_prefix + "lim:"
        else:
            if cfg.budgets is not None:
                self.ledger = Ledger(cfg.budgets.sqlite_path)
                memory.on_spend = self.ledger.record
            self.store = memory
            prefix = ""
        self.planner = Planner(cfg.limits, cfg.budgets, prefix)
        self.prices: dict[str, prices.Price] = {}
        self.counters: dict[str, estimate.Counter] = {}
        self.alerts = Alerts(gw)
        self._periods: dict[str, Period] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        routes = self.gw.router.routes()
        price_map = await loop.run_in_executor(None, prices.load_price_map)
        self.prices = prices.resolve(routes, dict(self.gw.config.prices), price_map)
        names = {estimate.encoding_for(r.alias) for r in routes}
        self.counters = await loop.run_in_executor(None, estimate.load_counters, names)
        if self.ledger is not None:
            await self.ledger.start(self.store)  # type: ignore[arg-type]
        if len(self.counters) < len(names):
            self.gw.log.warning("token_estimate_fallback", missing=sorted(names - set(self.counters)),
                                detail="tiktoken or its offline encodings unavailable: 1 token per 4 bytes")

    async def stop(self) -> None:
        if self.ledger is not None:
            await self.ledger.stop()
        await self.alerts.close()

    def _store_fault(self, op: str, e: BaseException) -> None:
        self.gw.metrics.count(self.gw.metrics.limits_store_errors, op)
        self.gw.log.warning("limits_store_unreachable", op=op, error=type(e).__name__,
                            fail_policy=self.limits.fail_policy if self.limits else "open")

    def period(self, kind: str) -> Period:
        p = self._periods.get(kind)
        now = time.time()
        if p is None or (p.ends_at is not None and now >= p.ends_at):
            p = self._periods[kind] = period_of(kind, now, self.tz)
        return p

    # -- request ---------------------------------------------------------------------------------
    async def count_prompt(self, ctx: RequestContext) -> int:
        count = self.counters.get(estimate.encoding_for(ctx.model), estimate.bytes_counter)
        if len(ctx.body) > LARGE_PROMPT_CHARS:
            return await asyncio.get_running_loop().run_in_executor(
                None, estimate.prompt_tokens, ctx.endpoint, ctx.payload, count)
        return estimate.prompt_tokens(ctx.endpoint, ctx.payload, count)

    async def on_request(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        assert principal is not None
        price = self.prices.get(ctx.model, prices.FREE)
        prompt = await self.count_prompt(ctx)
        allowance = estimate.output_allowance(ctx.endpoint, ctx.payload, self.default_max_tokens)
        if price.context_window is not None:
            explicit = estimate.output_allowance(ctx.endpoint, ctx.payload, 0)
            if prompt + explicit > price.context_window:
                raise bad_request(
                    f"This model's maximum context length is {price.context_window} tokens. However, you requested "
                    f"about {prompt + explicit} tokens ({prompt} in the messages, {explicit} in the completion). "
                    "Please reduce the length of the messages or completion.",
                    param="messages", code="context_length_exceeded")
            allowance = min(allowance, max(0, price.context_window - prompt))
        plan = self.planner.plan(principal.key_name, principal.team, ctx.model)
        tokens = prompt + allowance
        buckets = [BucketCheck(b.key, b.rate, b.capacity, 1 if b.kind == "requests" else tokens) for b in plan.buckets]
        counters = [CounterCheck(c.key, c.limit) for c in plan.counters]
        cost = price.cost(prompt, allowance)
        budgets = []
        for spec in plan.budgets:
            period = self.period(spec.rule.period if spec.rule else "monthly")
            hard = spec.rule.hard_usd if spec.rule else None
            # only a hard budget needs the reservation; a tracked one is charged at the settle
            budgets.append(BudgetCheck(f"{spec.key_base}:{period.id}", None if hard is None else round(hard * NANO),
                                       0 if hard is None else cost, ttl_of(period, time.time())))
        admission = await self.store.admit(buckets, counters, budgets)
        if self.headers_on:
            ctx.response_headers.update(rate_headers(plan, admission.levels, admission.resets))
        if not admission.ok:
            raise self._refusal(ctx, plan, admission.failed, admission.retry_after_s)
        if self.cut_streams and ctx.stream and any(g.hard is not None for g in budgets):
            ctx.max_stream_events = allowance  # >= 1 token per event: never past the reservation
        ctx.limits = Reservation(admission.store or self.store, plan, buckets, budgets, prompt, allowance, cost, price)
        return None

    def _refusal(self, ctx: RequestContext, plan: Plan, failed: str, wait: float) -> GatewayError:
        what, _, idx = failed.partition(":")
        i = int(idx)
        team = ctx.principal.team if ctx.principal else ""
        m = self.gw.metrics
        if what == "budget":
            spec = plan.budgets[i]
            m.count(m.budget_refused, team)
            period = self.period(spec.rule.period if spec.rule else "none")
            headers = {} if period.ends_at is None else {"Retry-After": str(max(1, math.ceil(period.ends_at - time.time())))}
            return GatewayError(429, f"The {spec.scope} `{spec.name}` has reached its hard budget of "
                                f"${spec.rule.hard_usd if spec.rule else 0:g} for this {period_word(spec)}.",
                                type="insufficient_quota", code="budget_exceeded", headers=headers)
        if what == "bucket":
            spec_b = plan.buckets[i]
            scope, name, unit = spec_b.scope, spec_b.name, f"{spec_b.kind} per minute"
            limit = f"limit {spec_b.capacity:g}"
            kind = spec_b.kind
        else:
            spec_c = plan.counters[i]
            scope, name, unit, limit, kind = spec_c.scope, spec_c.name, "concurrent requests", f"limit {spec_c.limit}", "requests"
        m.count(m.rate_limited, scope, team)
        return GatewayError(429, f"Rate limit reached for {unit} on {scope} `{name}`: {limit}. "
                            f"Please try again in {format_duration(wait)}.", type=kind, code="rate_limit_exceeded",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})

    async def on_complete(self, ctx: RequestContext) -> None:
        r: Reservation | None = ctx.limits
        if r is None:
            return
        ctx.limits = None
        cached = 0
        if ctx.usage.known:
            p, c, cached = ctx.usage.prompt_tokens, ctx.usage.completion_tokens, ctx.usage.cached_tokens
        elif ctx.deployment is None:
            p = c = 0  # never reached an upstream: refund everything
        else:
            p, c = r.prompt, r.allowance  # reached it, no usage known: keep the worst case
        actual_cost = r.price.cost(p, c, cached)
        charged = r.prompt + r.allowance
        buckets = [(b, 0.0 if spec.kind == "requests" else float(charged - p - c))
                   for b, spec in zip(r.buckets, r.plan.buckets)]
        counters = [c_.key for c_ in r.plan.counters]
        settles = [BudgetSettle(g.key, g.amount, actual_cost, ctx.model, p, c, g.ttl_s) for g in r.budgets]
        self.gw.spawn(self._settle(ctx, r, buckets, counters, settles, actual_cost))

    async def _settle(self, ctx: RequestContext, r: Reservation, buckets: list, counters: list[str],
                      settles: list[BudgetSettle], actual_cost: int) -> None:
        team = ctx.principal.team if ctx.principal else ""
        if actual_cost:
            self.gw.metrics.spend_child(team, ctx.model).inc(actual_cost / NANO)
        try:
            totals = await r.store.settle(buckets, counters, settles)
        except Exception:
            self.gw.log.exception("limits_settle_failed", request_id=ctx.request_id)
            return
        for spec, total in zip(r.plan.budgets, totals):
            soft = spec.rule.soft_usd if spec.rule else None
            if soft is not None and total - actual_cost < soft * NANO <= total:
                self.alerts.soft_limit(spec, team, total / NANO)

    # -- reading spend ---------------------------------------------------------------------------
    async def spend(self, *, team: str | None = None, key: str | None = None) -> dict[str, Any]:
        """Spend of a team or a key in its current budget period (the public read API)."""
        from gateway.limits.usage import report
        return await report(self, team=team, key=key)


def period_word(spec: Any) -> str:
    kind = spec.rule.period if spec.rule else "none"
    return {"daily": "day", "weekly": "week", "monthly": "month", "none": "lifetime"}[kind]


def rate_headers(plan: Plan, levels: list[float], resets: list[float]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest requests bucket and the tightest tokens bucket."""
    out: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        best = None
        for spec, level, reset in zip(plan.buckets, levels, resets):
            if spec.kind == kind and (best is None or level / spec.capacity < best[1] / best[0].capacity):
                best = (spec, level, reset)
        if best is not None:
            spec, level, reset = best
            out[f"x-ratelimit-limit-{kind}"] = str(int(spec.capacity))
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(level)))
            out[f"x-ratelimit-reset-{kind}"] = format_duration(reset)
    return out


def format_duration(seconds: float) -> str:
    """OpenAI's style: 20ms, 1.5s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    s = math.ceil(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s"


def build_limits(gw: "Gateway") -> LimitsPhase | None:
    cfg = gw.config
    if cfg.limits is None and cfg.budgets is None and not cfg.prices:
        return None
    return LimitsPhase(gw)
