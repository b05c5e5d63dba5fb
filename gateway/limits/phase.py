"""The limits phase: estimate, check the context window, admit (rate limits + budget reservation in
one store call), and settle to the real usage at the end. Also the async API the rest of the gateway
(and the ops helper) reads spend through: `await gateway.limits.spend(team=...)`.

Reservation: TPM buckets are charged prompt estimate + output allowance (per answer max_tokens, else
`limits.default_max_tokens`, capped by the context window or `limits.max_reserve_tokens`, times the
answers), budgets the worst-case cost of that. Under a hard budget the upstream is told the per-answer
allowance (`ctx.output_cap`, written into the body by gateway/attempt.py) so no answer passes its
reservation. The request's tap (EventBudget) counts the output tokens that went to the client and,
with `budgets.cut_streams`, cuts a stream at its reservation. At the end both are corrected to what
the upstream reported, else to what it was asked to do (`LimitsPhase.used`; docs/limits.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_request
from gateway.limits import estimate, prices
from gateway.limits.alerts import Alerts
from gateway.limits.estimator import TokenEstimate
from gateway.limits.ledger import Ledger
from gateway.limits.periods import Period, period_of, ttl_of
from gateway.limits.rules import Plan, Planner
from gateway.limits.store import (
    HOLD_S,
    NANO,
    BucketCheck,
    BudgetCheck,
    BudgetSettle,
    CounterCheck,
    Hold,
    MemoryStore,
    Store,
)
from gateway.limits.stores import build_store, previous_state
from gateway.phases import Cut
from gateway.sse import _event_json, _split_events

if TYPE_CHECKING:
    from gateway.runtime import Gateway


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
    hold: Hold  # the request's slots and budget reservations (renewed while it runs)
    meter: "EventBudget"  # the output tokens the answer carried, counted as it went out


class LimitsPhase:
    name = "limits"

    def __init__(self, gw: "Gateway", previous: "Gateway | None" = None) -> None:
        cfg = gw.config
        self.gw = gw
        self.limits = cfg.limits
        self.budgets_cfg = cfg.budgets
        self.tz = ZoneInfo(cfg.budgets.timezone if cfg.budgets else "UTC")
        self.default_max_tokens = cfg.limits.default_max_tokens if cfg.limits else 4096
        self.max_reserve_tokens = cfg.limits.max_reserve_tokens if cfg.limits else 32768
        self.headers_on = bool(cfg.limits and cfg.limits.rules)
        self.cut_streams = bool(cfg.budgets and cfg.budgets.cut_streams)
        self.ledger: Ledger | None = None
        handed = previous_state(gw, previous)  # a reload: the old gateway's memory (and journal)
        self.store, self.state = build_store(gw, "limits", handed)
        prefix = cfg.redis.key_prefix + "lim:" if cfg.redis is not None else ""
        if self.state.ledger_path is not None:
            old = previous.limits.ledger if handed is not None and previous and previous.limits else None
            self.ledger = old or Ledger(self.state.ledger_path)
            self.state.memory.on_spend = self.ledger.record
        self.planner = Planner(cfg.limits, cfg.budgets, prefix)
        self.prices: dict[str, prices.Price] = {}
        self.estimator = gw.estimator
        self.alerts = Alerts(gw)
        self._periods: dict[str, Period] = {}
        self.hold_s = cfg.limits.reservation_ttl_s if cfg.limits else HOLD_S
        # requests admitted and not yet settled: their reservations are renewed every hold_s / 3
        self._live: dict[str, tuple[Store, Hold]] = {}
        self._renewer: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        routes = self.gw.router.routes()
        price_map = await loop.run_in_executor(None, prices.load_price_map)
        self.prices = prices.resolve(routes, dict(self.gw.config.prices), price_map)
        missing = await self.estimator.start([r.alias for r in routes])
        if self.ledger is not None:
            await self.ledger.start(self.store)  # type: ignore[arg-type]
        if missing:
            self.gw.log.warning(
                "token_estimate_fallback",
                missing=missing,
                detail="tiktoken or its offline encodings unavailable: 1 token per 4 bytes",
            )
        self._renewer = loop.create_task(self._renew_loop(), name="switchyard-limits-renew")

    async def _renew_loop(self) -> None:
        """Keep the reservations of running requests alive (a long stream keeps its slot); a killed
        process stops renewing, and its reservations expire hold_s later."""
        while True:
            await asyncio.sleep(self.hold_s / 3)
            by_store: dict[int, tuple[Store, list[Hold]]] = {}
            for store, hold in list(self._live.values()):
                by_store.setdefault(id(store), (store, []))[1].append(hold)
            for store, holds in by_store.values():
                try:
                    await store.renew(holds, self.hold_s)
                except Exception:
                    self.gw.log.exception("limits_renew_failed")

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self.ledger is not None:
            await self.ledger.stop()
        await self.alerts.close()

    def period(self, kind: str) -> Period:
        p = self._periods.get(kind)
        now = time.time()
        if p is None or (p.ends_at is not None and now >= p.ends_at):
            p = self._periods[kind] = period_of(kind, now, self.tz)
        return p

    # -- request ---------------------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        assert principal is not None
        price = self.prices.get(ctx.model, prices.FREE)
        est = await self.estimator.of(ctx)
        prompt, per_answer = est.prompt, est.per_answer
        if price.context_window is not None:  # per answer: each prompt with its own answer must fit
            window = price.context_window
            explicit = estimate.requested_output(ctx.endpoint, ctx.payload) or 0
            if est.longest + explicit > window:
                raise bad_request(
                    f"This model's maximum context length is {window} tokens. However, you requested "
                    f"about {est.longest + explicit} tokens ({est.longest} in the messages, {explicit} in the "
                    "completion). Please reduce the length of the messages or completion.",
                    param="messages",
                    code="context_length_exceeded",
                )
            per_answer = min(per_answer, max(0, window - est.longest))  # what the upstream can produce at most
        else:  # one request may not reserve without bound (max_tokens 1e12 would lock the key out)
            per_answer = min(per_answer, self.max_reserve_tokens)
        allowance = per_answer * est.answers
        if allowance != est.allowance:
            ctx.estimate = TokenEstimate(prompt, allowance, est.longest, per_answer, est.answers)
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
            budgets.append(
                BudgetCheck(
                    f"{spec.key_base}:{period.id}",
                    None if hard is None else round(hard * NANO),
                    0 if hard is None else cost,
                    ttl_of(period, time.time()),
                )
            )
        hold = Hold(ctx.request_id, tuple(c.key for c in counters), tuple(g.key for g in budgets))
        if isinstance(self.store, MemoryStore):  # no await inside: nothing can cut it short
            admission = self.store.admit_now(buckets, counters, budgets, hold.holder, self.hold_s)
        else:
            # The admission runs in a task of its own: a client gone while it is in flight (Redis) does
            # not stop it half-way, and what it took is given back as soon as it answers.
            admitting = asyncio.ensure_future(self.store.admit(buckets, counters, budgets, hold.holder, self.hold_s))
            try:
                admission = await asyncio.shield(admitting)
            except asyncio.CancelledError:
                self.gw.spawn(self._release_late(admitting, plan, buckets, budgets, hold))
                raise
        if self.headers_on:
            ctx.response_headers.update(rate_headers(plan, admission.levels, admission.resets))
        if not admission.ok:
            raise self._refusal(ctx, plan, admission.failed, admission.retry_after_s)
        store = admission.store or self.store
        self._live[hold.holder] = (store, hold)
        hard = any(g.hard is not None for g in budgets)
        if hard and est.answers:
            requested = estimate.requested_output(ctx.endpoint, ctx.payload)
            if requested is None or requested > per_answer:  # the upstream stops at the reservation
                ctx.output_cap = max(1, per_answer)
        meter = EventBudget(self.estimator.counter(ctx.model), allowance if hard and self.cut_streams else None)
        ctx.taps.append(meter)
        ctx.phase_state[self.name] = Reservation(
            store, plan, buckets, budgets, prompt, allowance, cost, price, hold, meter
        )
        return None

    async def _release_late(
        self,
        admitting: "asyncio.Future[Any]",
        plan: Plan,
        buckets: list[BucketCheck],
        budgets: list[BudgetCheck],
        hold: Hold,
    ) -> None:
        """The request was cancelled while its admission was in flight: once the store answers, give
        back whatever it took (nothing reached an upstream)."""
        try:
            admission = await admitting
        except Exception:
            return  # the store failed: it took nothing
        if not admission.ok:
            return
        store = admission.store or self.store
        try:
            await store.settle(
                [(b, float(b.cost)) for b, spec in zip(buckets, plan.buckets) if spec.kind == "tokens"],
                list(hold.counters),
                [BudgetSettle(g.key, 0, "", 0, 0, g.ttl_s) for g in budgets],
                hold.holder,
            )
        except Exception:
            self.gw.log.exception("limits_settle_failed", request_id=hold.holder)

    def _refusal(self, ctx: RequestContext, plan: Plan, failed: str, wait: float) -> GatewayError:
        what, _, idx = failed.partition(":")
        i = int(idx)
        team = ctx.principal.team if ctx.principal else ""
        m = self.gw.metrics
        if what == "budget":
            spec = plan.budgets[i]
            m.count(m.budget_refused, team)
            period = self.period(spec.rule.period if spec.rule else "none")
            headers = (
                {} if period.ends_at is None else {"Retry-After": str(max(1, math.ceil(period.ends_at - time.time())))}
            )
            return GatewayError(
                429,
                f"The {spec.scope} `{spec.name}` has reached its hard budget of "
                f"${spec.rule.hard_usd if spec.rule else 0:g} for this {period_word(spec)}.",
                type="insufficient_quota",
                code="budget_exceeded",
                headers=headers,
            )
        if what == "bucket":
            spec_b = plan.buckets[i]
            scope, name, unit = spec_b.scope, spec_b.name, f"{spec_b.kind} per minute"
            limit = f"limit {spec_b.capacity:g}"
            kind = spec_b.kind
        else:
            spec_c = plan.counters[i]
            scope, name, unit, limit, kind = (
                spec_c.scope,
                spec_c.name,
                "concurrent requests",
                f"limit {spec_c.limit}",
                "requests",
            )
        m.count(m.rate_limited, scope, team)
        return GatewayError(
            429,
            f"Rate limit reached for {unit} on {scope} `{name}`: {limit}. Please try again in {format_duration(wait)}.",
            type=kind,
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def on_complete(self, ctx: RequestContext) -> None:
        r: Reservation | None = ctx.phase_state.pop(self.name, None)
        if r is None:
            return
        p, c, cached, model = *self.used(ctx, r), ctx.model
        if not ctx.usage.known and not ctx.upstream_reached and ctx.deployment is None:
            model = ""  # never reached an upstream: a release, not a request in the usage report
        actual_cost = r.price.cost(p, c, cached)
        charged = r.prompt + r.allowance
        buckets = [
            (b, 0.0 if spec.kind == "requests" else float(charged - p - c))
            for b, spec in zip(r.buckets, r.plan.buckets)
        ]
        counters = [c_.key for c_ in r.plan.counters]
        settles = [BudgetSettle(g.key, actual_cost, model, p, c, g.ttl_s) for g in r.budgets]
        self.gw.spawn(self._settle(ctx, r, buckets, counters, settles, actual_cost))

    @staticmethod
    def used(ctx: RequestContext, r: Reservation) -> tuple[int, int, int]:
        """(prompt, completion, cached prompt) tokens to charge: what the upstream reported, else
        what it was asked to do (docs/limits.md, "What a request is charged")."""
        u = ctx.usage
        if u.known:
            return u.prompt_tokens, u.completion_tokens, u.cached_tokens
        if not ctx.upstream_reached and ctx.deployment is None:
            return 0, 0, 0  # never reached an upstream
        error = ctx.error_type or ""
        if error == "upstream_misconfigured" or (error.startswith("upstream_") and 400 <= ctx.status < 500):
            return 0, 0, 0  # the upstream refused it (a 4xx): it generated nothing
        if error == "upstream_response_too_large":
            return r.prompt, r.allowance, 0  # the upstream wrote a whole answer, too long to pass on
        if ctx.deployment is None and ctx.status >= 500:
            return r.prompt, 0, 0  # the upstream failed (5xx, timeout) before any answer: it may have read the prompt
        meter = r.meter
        if ctx.api is not None and ctx.api.native_answer is not None:
            return r.prompt, r.allowance, 0  # another API's answer passed through: the taps did not see it
        if ctx.stream or meter.body_seen:
            return r.prompt, meter.tokens, 0  # what it sent, counted (cancelled before its first byte: none)
        return r.prompt, r.allowance, 0  # cancelled while the upstream worked on a whole answer: its reservation

    async def _settle(
        self,
        ctx: RequestContext,
        r: Reservation,
        buckets: list,
        counters: list[str],
        settles: list[BudgetSettle],
        actual_cost: int,
    ) -> None:
        team = ctx.principal.team if ctx.principal else ""
        if actual_cost:
            self.gw.metrics.spend_child(team, ctx.model).inc(actual_cost / NANO)
        try:
            totals = await r.store.settle(buckets, counters, settles, r.hold.holder)
        except Exception:
            self.gw.log.exception("limits_settle_failed", request_id=ctx.request_id)
            return
        finally:
            self._live.pop(r.hold.holder, None)
        for spec, total in zip(r.plan.budgets, totals):
            soft = spec.rule.soft_usd if spec.rule else None
            if soft is not None and total - actual_cost < soft * NANO <= total:
                self.alerts.soft_limit(spec, team, total / NANO)

    # -- reading spend ---------------------------------------------------------------------------
    async def spend(self, *, team: str | None = None, key: str | None = None) -> dict[str, Any]:
        """Spend of a team or a key in its current budget period (the public read API)."""
        from gateway.limits.usage import report

        return await report(self, team=team, key=key)


class EventBudget:
    """The request's tap: counts the output tokens of the answer as it goes to the client (the
    text of each streamed delta, or of a whole body without usage, by the model's tokenizer; at
    least 1 per event that carries text), so a request that ends without usage is charged what it
    really sent. With `limit` (budgets.cut_streams under a hard budget) a stream is cut before the
    event that would take it past its reservation, however many tokens an event carries."""

    __slots__ = ("count", "limit", "tokens", "body_seen")

    def __init__(self, count: estimate.Counter, limit: int | None) -> None:
        self.count = count
        self.limit = limit
        self.tokens = 0
        self.body_seen = False

    def on_events(self, data: bytes, count: int) -> Cut | None:
        for i, event in enumerate((data,) if count == 1 else _split_events(data)):
            n = answer_tokens(_event_json(event), self.count)
            if self.limit is not None and self.tokens + n > self.limit:
                return Cut(i, "The stream was cut: it would pass the hard budget's reservation.", "budget_exceeded")
            self.tokens += n
        return None

    def on_body(self, body: bytes) -> None:
        if b'"usage"' in body:  # reported: the settle reads it
            return
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict) and isinstance(obj.get("choices"), list):
            self.tokens = answer_tokens(obj, self.count)
            self.body_seen = True


_DELTA_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


def answer_tokens(obj: Any, count: estimate.Counter) -> int:
    """Output tokens in one streamed event (chat / completions chunks, Responses and Messages API
    deltas) or one whole chat / completions body."""
    if not isinstance(obj, dict):
        return 0
    choices = obj.get("choices")
    if isinstance(choices, list):
        total = 0
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            parts = [ch["text"]] if isinstance(ch.get("text"), str) else []
            d = ch.get("delta") or ch.get("message")
            if isinstance(d, dict):
                parts += [d[f] for f in _DELTA_FIELDS if isinstance(d.get(f), str)]
                for call in d.get("tool_calls") or ():
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        parts += [fn[f] for f in ("name", "arguments") if isinstance(fn.get(f), str)]
            text = "".join(parts)
            if text:
                total += max(1, count(text))
        return total
    delta = obj.get("delta")
    if isinstance(delta, dict):  # the Messages API: text, tool input JSON, thinking
        delta = next((delta[f] for f in ("text", "partial_json", "thinking") if isinstance(delta.get(f), str)), "")
    return max(1, count(delta)) if isinstance(delta, str) and delta else 0


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


def build_limits(gw: "Gateway", previous: "Gateway | None" = None) -> LimitsPhase | None:
    """previous: the gateway a hot reload replaces, whose limits state is handed over."""
    cfg = gw.config
    if cfg.limits is None and cfg.budgets is None and not cfg.prices:
        return None
    return LimitsPhase(gw, previous)
