"""Dispatch: send the request to a deployment and deliver its answer; retry, fall back and hedge
while nothing has reached the client.

    candidates (gateway/selection.py)  which deployment next: untried of the alias, then of each
                                       fallback, then tried ones; filters incl. quotas and cool-downs
    attempt    (gateway/attempt.py)    one upstream request: slot, breaker ticket, first bytes, outcome
    hedging    (gateway/hedging.py)    a second copy raced to the first byte
    forward    (gateway/forward.py)    the answer to the client, through the phases' taps

Resilience (settings in `[resilience]`, state in gateway/resilience.py):
- An attempt waits for the first upstream bytes (the first SSE chunk, or the whole non-streamed body)
  before anything is sent to the client; any failure up to there (connection errors, timeouts,
  statuses in `retry_on`) may be retried: after a full-jitter backoff, while `max_attempts` and the
  retry budget allow. A 429/503 with Retry-After puts its deployment in a cool-down; when nothing
  else can serve, the gateway waits for the cool-down itself if it is short (`max_retry_after_s`).
- Once the first byte reached the client nothing is retried: a stream that breaks ends with an SSE
  error event and counts as a breaker failure.
- Nothing can serve at all: 503 with Retry-After at once; 429 `rate_limit_exceeded` instead when
  deployments wait for their own quota to refill (gateway/limits/deployment_quota.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from backends.base import Upstream
from backends.deployment import Deployment
from gateway.attempt import Attempt, AttemptFailed, Delivery, Outcome, outcome_of
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.forward import forward_body, forward_stream
from gateway.hedging import hedged
from gateway.runtime import Gateway
from gateway.selection import Candidates

# Upstream statuses that mean the gateway's own setup is wrong (its key, its model name), not the
# client's request: answered as 502 so the client is not told its own key is bad.
_GATEWAY_SIDE = {
    401: "rejected the gateway's credentials",
    403: "refused the gateway's credentials",
    404: "does not serve this model or path",
}
_PASS_HEADERS = ("Retry-After",)


async def dispatch(request: web.Request | None, ctx: RequestContext, gw: Gateway) -> web.StreamResponse:
    assert ctx.route is not None
    res = gw.resilience
    res.budget.record_request()
    settings = res.model(ctx.route.alias)
    candidates = Candidates(ctx, gw)
    last: AttemptFailed | None = None
    failed_5xx: set[str] = set()  # deployments that answered this request with a 5xx status
    while True:
        if last is not None:
            if last.final or ctx.attempts >= res.cfg.max_attempts or len(failed_5xx) >= 2:
                # two engines refusing the same request with a 5xx: the request is the cause,
                # a third try would only load another engine (and it is not their fault)
                return _final(ctx, last)
            if not res.budget.try_spend():
                gw.metrics.count(gw.metrics.retry_budget_exhausted, ctx.route.alias)
                return _final(ctx, last)
            gw.metrics.count(gw.metrics.retries, ctx.route.alias, last.kind)
            await asyncio.sleep(res.backoff(ctx.attempts))
        admission = gw.admission if last is None else None  # retries never queue
        if admission is not None and admission.must_queue(candidates):
            pick = await admission.admit(ctx, candidates)  # behind the requests already waiting
        else:
            pick = await candidates.next()
        if pick is None:
            cooling = candidates.cool_down_wait()
            if last is not None and cooling is not None and cooling <= res.cfg.max_retry_after_s:
                await asyncio.sleep(cooling)  # an upstream asked for a short pause (Retry-After): honour it
                pick = await candidates.next()
            elif admission is not None:
                pick = await admission.admit(ctx, candidates)  # wait for room (gateway/admission/)
            if pick is None:
                if last is not None:
                    return _final(ctx, last)
                raise candidates.refusal()
        ctx.attempts += 1
        attempt = Attempt(ctx, gw, pick.route, pick.deployment, pick.charge, pick.acquired)
        attempt.suspect_request = bool(failed_5xx)
        try:
            if settings.hedge_after_s and ctx.attempts == 1:
                attempt = await hedged(gw, candidates, attempt, settings)
            else:
                await attempt.send(res.model(pick.route.alias).ttfb_s)
        except AttemptFailed as failed:
            last = failed
            if failed.kind.startswith("status_5"):
                failed_5xx.add(pick.deployment.name)
            continue
        except BaseException:  # cancelled: the client went away
            attempt.abandon()
            attempt.end(Outcome.NEUTRAL)
            raise
        async with attempt:
            return await _deliver(request, ctx, gw, attempt)


async def _deliver(
    request: web.Request | None, ctx: RequestContext, gw: Gateway, attempt: Attempt
) -> web.StreamResponse:
    d = attempt.deployment
    ctx.deployment = d
    attempt.answered = True
    ctx.response_headers["x-switchyard-deployment"] = d.name
    ctx.response_headers["x-switchyard-model"] = attempt.route.alias
    if ctx.route is not None and attempt.route is not ctx.route:
        gw.metrics.count(gw.metrics.fallbacks, ctx.route.alias, attempt.route.alias)
    up = attempt.upstream
    assert up is not None
    if up.status >= 400:
        attempt.outcome = outcome_of(Delivery.ERROR_STATUS, up.status)
        return _upstream_error(ctx, up, attempt.body or b"", d)
    resp: web.StreamResponse
    if attempt.chunks is None:
        resp, delivery = forward_body(ctx, up, attempt.body or b"")
    else:
        assert request is not None  # internal requests (pipeline.run_internal) are never streamed
        try:
            stream, delivery = await forward_stream(request, ctx, up, attempt.injected, attempt.chunks)
        except GatewayError:  # the upstream broke before its first event reached the client
            attempt.outcome = Outcome.FAILURE
            gw.metrics.upstream_error(d.name, "broken_stream")
            raise
        resp = stream
        if delivery is Delivery.BROKEN:
            gw.metrics.count(gw.metrics.broken_streams, d.name)
            gw.metrics.upstream_error(d.name, "broken_stream")
    attempt.outcome = outcome_of(delivery, up.status)
    return resp


def _final(ctx: RequestContext, last: AttemptFailed) -> web.StreamResponse:
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


def _upstream_error(ctx: RequestContext, upstream: Upstream, body: bytes, deployment: Deployment) -> web.Response:
    """An upstream error status not retried: the client's own mistakes (400, 422 ...) pass through
    as the upstream worded them; credential or model-name problems on the gateway's side become 502."""
    if upstream.status in _GATEWAY_SIDE:
        raise GatewayError(
            502,
            f"Backend `{deployment.backend.name}` {_GATEWAY_SIDE[upstream.status]} (upstream status {upstream.status}).",
            type="upstream_error",
            code="upstream_misconfigured",
        )
    for name in _PASS_HEADERS:
        if name in upstream.headers:
            ctx.response_headers[name] = upstream.headers[name]
    ctx.error_type = f"upstream_{upstream.status}"
    return forward_body(ctx, upstream, body)[0]
