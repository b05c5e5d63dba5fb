"""Phases 6-7, choose and send: pick a deployment, send the request, hand the answer to forward;
retry, fall back and hedge while nothing has reached the client.

The request body is forwarded as received unless the upstream needs it changed: the upstream model
name differs from the alias, or the gateway must ask for stream usage. Then the parsed payload is
serialized once (orjson) with those fields set; nothing else is touched.

The deployment's in-flight count rises before the upstream call and drops only when the response
body has ended (or failed), in a `finally`, so least-active sees streams that are still running.

Resilience (settings in `[resilience]`, state in gateway/resilience.py):
- An attempt (`_Attempt.run`) waits for the first upstream bytes (the first SSE chunk, or the whole
  non-streamed body) before anything is sent to the client. Any failure up to there is an
  `_AttemptFailed` and may be retried: connection errors, timeouts, statuses in `retry_on`.
- Each retry goes to a deployment not tried yet (this alias first, then the fallback aliases in
  order), else to one already tried; after a full-jitter backoff; only while `max_attempts` and the
  retry budget allow. A 429/503 with Retry-After puts its deployment in a cool-down; when nothing
  else can serve, the gateway waits for the cool-down itself if it is short (`max_retry_after_s`).
- Once the first byte reached the client nothing is retried: a stream that breaks ends with an SSE
  error event (forward.py) and counts as a breaker failure.
- Breakers: every attempt is a ticket on its deployment's breaker; 5xx, timeouts, connection errors
  and broken streams are failures, 2xx successes, client 4xx (and 429) neutral.
- Nothing can serve at all: 503 with Retry-After at once (errors.unavailable); 429
  `rate_limit_exceeded` instead when deployments wait for their own quota to refill.
- Deployment quotas (`backends[].limits`, gateway/limits/deployment_quota.py): a picked deployment's
  quota is taken before the attempt is sent; one over quota is skipped and the pick repeated.
- Hedging (`models[].hedge_after_s`): no first byte from the first attempt after that delay sends a
  copy to another deployment; the first to get its first byte wins, the other is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import orjson
from aiohttp import web

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout
from backends.deployment import Deployment
from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_gateway, gateway_timeout, unavailable
from gateway.forward import forward_body, forward_stream
from gateway.limits.deployment_quota import QuotaCharge, RequestQuota, quota_blocked
from gateway.request import ENDPOINTS
from gateway.resilience import ModelSettings, parse_retry_after
from gateway.routing import ModelRoute
from gateway.runtime import Gateway

# Upstream statuses that mean the gateway's own setup is wrong (its key, its model name), not the
# client's request: answered as 502 so the client is not told its own key is bad.
_GATEWAY_SIDE = {401: "rejected the gateway's credentials", 403: "refused the gateway's credentials",
                 404: "does not serve this model or path"}
_PASS_HEADERS = ("Retry-After",)


def upstream_body(ctx: RequestContext, deployment: Deployment) -> tuple[bytes, bool]:
    """The bytes to send upstream, and whether the gateway added the stream usage request."""
    inject_usage = ctx.stream and not ctx.client_wants_usage and deployment.backend.config.stream_usage
    if deployment.upstream_model == ctx.model and not inject_usage:
        return ctx.body, False
    payload = dict(ctx.payload)
    payload["model"] = deployment.upstream_model
    if inject_usage:
        options = payload.get("stream_options")
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload), inject_usage


class _AttemptFailed(Exception):
    """An attempt failed before anything reached the client."""

    def __init__(self, kind: str, error: GatewayError | None = None, upstream: Upstream | None = None,
                 body: bytes = b"", retryable: bool = True) -> None:
        super().__init__(kind)
        self.kind = kind  # "connect" | "timeout" | "status_NNN"
        self.error = error  # what the client gets if this is the last word (connect/timeout)
        self.upstream = upstream  # ... or this upstream answer, passed through (status failures)
        self.body = body
        self.retryable = retryable


class _Attempt:
    """One upstream request on one deployment: its in-flight count, policy hooks, breaker ticket."""

    def __init__(self, ctx: RequestContext, gw: Gateway, route: ModelRoute, deployment: Deployment,
                 charge: QuotaCharge | None = None) -> None:
        self.ctx, self.gw, self.route, self.deployment = ctx, gw, route, deployment
        self.charge = charge  # taken from the deployment's quota; settled in end()
        self.answered = False  # this attempt's answer went to the client (ctx.usage is its usage)
        self.reached = True  # False when the upstream was never reached (connection refused)
        self.upstream: Upstream | None = None
        self.chunks: AsyncIterator[bytes] | None = None
        self.body: bytes | None = None
        self.injected = False
        self._ended = False
        self._in_flight = gw.metrics.in_flight_for(deployment.name)
        deployment.acquire()
        self._in_flight.inc()
        route.policy.on_start(deployment, ctx)
        self.ticket = deployment.breaker.start() if deployment.breaker is not None else 0
        gw.metrics.count(gw.metrics.upstream_attempts, deployment.name)

    async def run(self, ttfb_s: float | None) -> "_Attempt":
        """Send, and wait for the first bytes of the answer; raise _AttemptFailed before that."""
        ctx, d, gw = self.ctx, self.deployment, self.gw
        body, self.injected = upstream_body(ctx, d)
        try:
            up = self.upstream = await d.backend.open(ENDPOINTS[ctx.endpoint][0], body, ctx.request_id, ttfb_s)
            if up.status >= 400:
                raw = await up.read()
                up.release()
                return self._status_failure(up, raw)
            if ctx.stream and up.headers.get("Content-Type", "").startswith("text/event-stream"):
                rest = up.iter_chunks()
                self.chunks = _chain(await rest.__anext__(), rest)  # the first chunk is here
            else:
                self.body = await up.read()
                up.release()
        except UpstreamTimeout as e:
            self._drop()
            gw.metrics.upstream_error(d.name, "timeout")
            raise _AttemptFailed("timeout", gateway_timeout(str(e))) from None
        except (UpstreamConnectError, StopAsyncIteration) as e:
            self.reached = self.upstream is not None
            self._drop()
            gw.metrics.upstream_error(d.name, "connect")
            raise _AttemptFailed("connect", bad_gateway(str(e) or "upstream sent an empty stream")) from None
        return self

    def _status_failure(self, up: Upstream, raw: bytes) -> "_Attempt":
        status, d = up.status, self.deployment
        if status >= 500:
            self.gw.metrics.upstream_error(d.name, "status")
        retry_after = parse_retry_after(up.headers)
        if status in (429, 503) and retry_after:
            d.cool_until = max(d.cool_until, time.monotonic() + retry_after)
        if status in self.gw.resilience.retry_on:
            raise _AttemptFailed(f"status_{status}", upstream=up, body=raw)
        self.body = raw  # a final answer (client 4xx, 5xx not retried): passed through
        return self

    def _drop(self) -> None:
        if self.upstream is not None:
            self.upstream.close()

    def end(self, outcome: str) -> None:
        """outcome: "success" | "failure" | "neutral". Idempotent."""
        if self._ended:
            return
        self._ended = True
        d = self.deployment
        d.release()
        self._in_flight.dec()
        self.route.policy.on_finish(d, self.ctx)
        if d.breaker is not None:
            getattr(d.breaker, outcome)(self.ticket)
        if outcome == "success":
            d.hedge_losses = 0
        if self.charge is not None and self.gw.quotas is not None:
            u = self.ctx.usage
            used = (u.prompt_tokens + u.completion_tokens) if self.answered and u.known else None
            self.gw.quotas.settle(self.charge, used if self.reached else 0)


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _outcome_of(kind: str) -> str:
    if kind in ("connect", "timeout") or kind.startswith("status_5"):
        return "failure"
    return "neutral"  # 429 and other 4xx: the upstream is alive


async def dispatch(request: web.Request, ctx: RequestContext, gw: Gateway) -> web.StreamResponse:
    assert ctx.route is not None
    res = gw.resilience
    res.budget.record_request()
    settings = res.model(ctx.route.alias)
    routes = [ctx.route] + [r for r in (gw.router.get(a) for a in settings.fallbacks) if r is not None]
    tried: set[str] = set()
    last: _AttemptFailed | None = None
    attempts = 0
    quota = RequestQuota(gw.quotas, ctx) if gw.quotas is not None and gw.quotas.covers(routes) else None
    while True:
        if attempts:
            assert last is not None
            if not last.retryable or attempts >= res.cfg.max_attempts:
                return _final(ctx, last, gw)
            if not res.budget.try_spend():
                gw.metrics.count(gw.metrics.retry_budget_exhausted, ctx.route.alias)
                return _final(ctx, last, gw)
            gw.metrics.count(gw.metrics.retries, ctx.route.alias, last.kind)
            await asyncio.sleep(res.backoff(attempts))
        route, deployment, charge = await _pick_within_quota(ctx, routes, tried, quota)
        if deployment is None:
            wait = min((d.retry_in() for r in routes for d in r.deployments), default=1.0)
            cooling = _cool_down_wait(routes)
            if last is not None and cooling is not None and cooling <= res.cfg.max_retry_after_s:
                await asyncio.sleep(cooling)  # an upstream asked for a short pause (Retry-After): honour it
                route, deployment, charge = await _pick_within_quota(ctx, routes, tried, quota)
            if deployment is None:
                if last is not None:
                    return _final(ctx, last, gw)
                if quota is not None and (quota.blocked or quota_blocked(routes)):
                    raise quota.refusal(ctx.route.alias, wait)
                raise unavailable(
                    f"No deployment of model `{ctx.route.alias}` (or its fallbacks) can take a request now "
                    "(all down, failing or at capacity); retry shortly.", retry_after=max(1.0, wait),
                )
        attempts += 1
        ctx.attempts = attempts
        tried.add(deployment.name)
        try:
            if settings.hedge_after_s and attempts == 1:
                attempt = await _hedged(ctx, gw, route, deployment, routes, tried, settings, charge, quota)
            else:
                attempt = await _run(ctx, gw, route, deployment, res.model(route.alias).ttfb_s, charge)
        except _AttemptFailed as failed:
            last = failed
            continue
        return await _answer(request, ctx, gw, attempt)


async def _pick_within_quota(ctx: RequestContext, routes: list[ModelRoute], tried: set[str],
                             quota: RequestQuota | None) -> tuple[ModelRoute, Deployment | None, QuotaCharge | None]:
    """_pick, then take the deployment's quota; one over quota is excluded and the pick repeated
    (each refusal excludes one more deployment, so this ends)."""
    while True:
        route, deployment = _pick(ctx, routes, tried, quota.blocked if quota is not None else ())
        if deployment is None or quota is None:
            return route, deployment, None
        ok, charge = await quota.take(deployment)
        if ok:
            return route, deployment, charge


def _pick(ctx: RequestContext, routes: list[ModelRoute], tried: set[str],
          blocked: "set[str] | tuple[()]" = ()) -> tuple[ModelRoute, Deployment | None]:
    """An untried deployment (this alias first, then the fallbacks in order), else a tried one;
    never one in `blocked` (over its quota for this request)."""
    always = frozenset(blocked)
    for exclude in (always | tried, always) if tried else (always,):
        for route in routes:
            try:
                return route, route.choose(ctx, exclude)
            except GatewayError:
                continue
    return routes[0], None


def _cool_down_wait(routes: list[ModelRoute]) -> float | None:
    """Seconds until the first deployment whose only obstacle is a Retry-After cool-down (breaker
    closed) may take requests again; None when none is cooling down."""
    now = time.monotonic()
    waits = [d.cool_until - now for r in routes for d in r.deployments
             if d.cool_until > now and (d.breaker is None or d.breaker.state == "closed")]
    return min(waits) if waits else None


class _Race:
    """Shared by the two copies of a hedged request: set once one of them has won."""

    decided = False


async def _run(ctx: RequestContext, gw: Gateway, route: ModelRoute, deployment: Deployment, ttfb_s: float | None,
               charge: QuotaCharge | None = None, race: _Race | None = None) -> _Attempt:
    attempt = _Attempt(ctx, gw, route, deployment, charge)
    try:
        return await attempt.run(ttfb_s)
    except _AttemptFailed as failed:
        attempt.end(_outcome_of(failed.kind))
        raise
    except BaseException:  # cancelled: the client went away, or the other copy of a hedge won
        attempt._drop()
        attempt.end(deployment.hedge_lost() if race is not None and race.decided else "neutral")
        raise


async def _hedged(ctx: RequestContext, gw: Gateway, route: ModelRoute, deployment: Deployment,
                  routes: list[ModelRoute], tried: set[str], settings: ModelSettings,
                  charge: QuotaCharge | None, quota: RequestQuota | None) -> _Attempt:
    """Run the first attempt; if it has no first byte after hedge_after_s, race a second copy on
    another deployment. The first to reach its first byte wins; the other is cancelled (its
    upstream connection closed, so the engine frees the slot)."""
    race = _Race()
    first = asyncio.ensure_future(_run(ctx, gw, route, deployment, settings.ttfb_s, charge, race))
    pending = {first}
    try:
        done, _ = await asyncio.wait(pending, timeout=settings.hedge_after_s)
        if done:
            pending.clear()
            return first.result()
        route2, second_d = _pick(ctx, routes, tried, quota.blocked if quota is not None else ())
        if second_d is None or second_d is deployment or not gw.resilience.budget.try_spend():
            pending.clear()
            return await first
        charge2 = None
        if quota is not None:
            ok, charge2 = await quota.take(second_d)
            if not ok:  # over its quota: no hedge
                pending.clear()
                return await first
        tried.add(second_d.name)
        ctx.attempts += 1
        second = asyncio.ensure_future(_run(ctx, gw, route2, second_d, settings.ttfb_s, charge2, race))
        pending.add(second)
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    race.decided = True  # the copy still pending lost: its cancellation is a hedge loss
                    winner = "primary" if task is first else "hedge"
                    gw.metrics.count(gw.metrics.hedges, route.alias, winner)
                    for other in done - {task}:  # finished in the same instant: it lost
                        _discard(other)
                    return task.result()
                error = task.exception()
        assert error is not None
        raise error
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            try:
                await task
            except BaseException:
                continue
            _discard(task)


def _discard(task: "asyncio.Future[_Attempt]") -> None:
    if task.cancelled() or task.exception() is not None:
        return
    loser = task.result()
    loser._drop()
    loser.end("neutral")


async def _answer(request: web.Request, ctx: RequestContext, gw: Gateway, attempt: _Attempt) -> web.StreamResponse:
    d = attempt.deployment
    ctx.deployment = d
    attempt.answered = True
    ctx.response_headers["x-switchyard-deployment"] = d.name
    ctx.response_headers["x-switchyard-model"] = attempt.route.alias
    if ctx.route is not None and attempt.route is not ctx.route:
        gw.metrics.count(gw.metrics.fallbacks, ctx.route.alias, attempt.route.alias)
    up = attempt.upstream
    assert up is not None
    outcome = "neutral"
    try:
        if up.status >= 400:
            outcome = "failure" if up.status >= 500 else "neutral"
            return await _upstream_error(ctx, up, attempt.body or b"", d)
        if attempt.chunks is not None:
            resp = await forward_stream(request, ctx, up, attempt.injected, attempt.chunks)
            if ctx.error_type == "broken_stream":
                outcome = "failure"
                if ctx.status:
                    gw.metrics.count(gw.metrics.broken_streams, d.name)
            else:
                outcome = "success"
            return resp
        outcome = "success"
        return await forward_body(ctx, up, attempt.body)
    finally:
        if ctx.error_type == "broken_stream":  # also when it broke before its first event went out
            outcome = "failure"
            gw.metrics.upstream_error(d.name, "broken_stream")
        attempt.end(outcome)


def _final(ctx: RequestContext, last: _AttemptFailed, gw: Gateway) -> web.StreamResponse:
    """Out of attempts (or budget): the last failure is the answer."""
    if last.upstream is None:
        assert last.error is not None
        raise last.error
    up = last.upstream
    for name in _PASS_HEADERS:
        if name in up.headers:
            ctx.response_headers[name] = up.headers[name]
    ctx.error_type = f"upstream_{up.status}"
    headers = dict(ctx.response_headers)
    headers["Content-Type"] = up.headers.get("Content-Type", "application/json")
    ctx.status = up.status
    return web.Response(status=up.status, body=last.body, headers=headers)


async def _upstream_error(ctx: RequestContext, upstream: Upstream, body: bytes, deployment: Deployment) -> web.Response:
    """An upstream error status not retried: the client's own mistakes (400, 422 ...) pass through
    as the upstream worded them; credential or model-name problems on the gateway's side become 502."""
    if upstream.status in _GATEWAY_SIDE:
        raise GatewayError(
            502, f"Backend `{deployment.backend.name}` {_GATEWAY_SIDE[upstream.status]} (upstream status {upstream.status}).",
            type="upstream_error", code="upstream_misconfigured",
        )
    for name in _PASS_HEADERS:
        if name in upstream.headers:
            ctx.response_headers[name] = upstream.headers[name]
    ctx.error_type = f"upstream_{upstream.status}"
    return await forward_body(ctx, upstream, body)
