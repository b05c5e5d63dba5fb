"""One attempt: one upstream request on one deployment, from acquiring its slot to releasing it.

    attempt = Attempt(ctx, gw, route, deployment, charge)   # in-flight +1, policy on_start, breaker ticket
    async with attempt:                                      # the outcome is settled on exit, once
        await attempt.send(ttfb_s)    # upstream bytes up to the first chunk; raises AttemptFailed
        ... forward the answer; attempt.outcome = outcome_of(delivery) ...

The breaker outcome is decided in one place: an AttemptFailed carries its own (connection errors,
timeouts and 5xx are failures; 429 and other 4xx neutral), a delivered answer gets `outcome_of` its
delivery, a cancellation is neutral (or a hedge loss, see hedging.py). `end()` releases the slot, runs
the policy's on_finish, records the breaker outcome and settles the deployment quota, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout, UpstreamTooLarge
from backends.deployment import Deployment
from gateway.admission.config import CLASSES
from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_gateway, gateway_timeout
from gateway.limits.estimate import apply_output_cap, capped_body
from gateway.request import ENDPOINTS
from gateway.resilience import parse_retry_after

if TYPE_CHECKING:
    from gateway.limits.deployment_quota import QuotaCharge
    from gateway.routing import ModelRoute
    from gateway.runtime import Gateway


class Outcome(Enum):
    """What an attempt tells its deployment's breaker."""

    SUCCESS = "success"
    FAILURE = "failure"  # the engine is at fault: 5xx, timeout, connection error, broken stream
    NEUTRAL = "neutral"  # says nothing about the engine: the client's 4xx, 429, a cancellation


class Delivery(Enum):
    """How an answer that reached the client ended (gateway/forward.py)."""

    COMPLETE = "complete"
    BROKEN = "broken"  # the upstream failed mid-answer (timeout, reset): an error event ended it
    CUT = "cut"  # a phase's tap ended it (a budget's reservation)
    ERROR_STATUS = "error_status"  # an upstream error status passed through


def outcome_of(delivery: Delivery, status: int) -> Outcome:
    if delivery is Delivery.BROKEN or status >= 500:
        return Outcome.FAILURE
    if delivery is Delivery.ERROR_STATUS:
        return Outcome.NEUTRAL
    return Outcome.SUCCESS


class AttemptFailed(Exception):
    """An attempt failed before anything reached the client (so it may be retried)."""

    def __init__(
        self,
        kind: str,
        outcome: Outcome,
        error: GatewayError | None = None,
        upstream: Upstream | None = None,
        body: bytes = b"",
        final: bool = False,
    ) -> None:
        super().__init__(kind)
        self.kind = kind  # "connect" | "timeout" | "bad_body" | "too_large" | "status_NNN": the retry metric's label
        self.outcome = outcome
        self.final = final  # not retried: another engine would fail the same way
        self.error = error  # what the client gets if this is the last word (connect / timeout) ...
        self.upstream = upstream  # ... or this upstream answer, passed through (status failures)
        self.body = body


def upstream_body(ctx: RequestContext, deployment: Deployment) -> tuple[bytes, bool]:
    """The bytes to send upstream, and whether the gateway added the stream usage request.

    As received unless the upstream needs it changed (its model name differs from the alias, or the
    gateway must ask for stream usage); then serialized once with those fields set."""
    backend = deployment.backend
    inject_usage = ctx.stream and not ctx.client_wants_usage and backend.config.stream_usage
    priority = engine_priority(backend.config.priority_field, ctx.priority)
    cap = ctx.output_cap
    if deployment.upstream_model == ctx.model and not inject_usage and priority is None and cap is None:
        return ctx.body, False
    payload = dict(ctx.payload)
    payload["model"] = deployment.upstream_model
    if cap is not None:  # the limits phase's reservation under a hard budget (gateway/limits/estimate.py)
        apply_output_cap(payload, ctx.endpoint, backend.config.kind, cap)
    if priority is not None:
        payload["priority"] = priority
    if inject_usage:
        options = payload.get("stream_options")
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload), inject_usage


# The engine's `priority` field per class rank (interactive, batch, background). vLLM runs lower
# values first (honoured with --scheduling-policy priority, otherwise ignored); SGLang higher first
# (with --enable-priority-scheduling). Other engines never get the field.
ENGINE_PRIORITY = {"vllm": (0, 10, 20), "sglang": (20, 10, 0)}


def engine_priority(field: str | None, rank: int) -> int | None:
    values = ENGINE_PRIORITY.get(field) if field else None
    return values[rank] if values is not None else None


def upstream_request(ctx: RequestContext, d: Deployment) -> tuple[str, bytes, bool, Mapping[str, str] | None]:
    """(path, body, usage injected, extra headers) to send to `d`. A request of another API decides
    its own per deployment: pass-through or translated (gateway/apis/call.py)."""
    if ctx.api is not None:
        path, body, injected, headers = ctx.api.upstream(d)
        if ctx.output_cap is not None:  # the limits phase's reservation, in the field of the API sent
            api = "chat" if path.endswith("/chat/completions") else ctx.api.name
            body = capped_body(body, api, d.backend.config.kind, ctx.output_cap)
        return path, body, injected, headers
    body, injected = upstream_body(ctx, d)
    return ENDPOINTS[ctx.endpoint][0], body, injected, None


class Attempt:
    def __init__(
        self,
        ctx: RequestContext,
        gw: "Gateway",
        route: "ModelRoute",
        deployment: Deployment,
        charge: "QuotaCharge | None" = None,
        acquired: bool = False,
    ) -> None:
        self.ctx, self.gw, self.route, self.deployment = ctx, gw, route, deployment
        self.charge = charge  # taken from the deployment's quota; settled in end()
        self.answered = False  # this attempt's answer went to the client (ctx.usage is its usage)
        self.upstream: Upstream | None = None
        self.chunks: AsyncIterator[bytes] | None = None  # a stream, its first chunk already here
        self.body: bytes | None = None  # a whole non-streamed answer (or an error body)
        self.injected = False  # the gateway asked for stream usage: strip that chunk
        self.reached = True  # False when the upstream never received the request (connection refused)
        self.ttfb_s: float | None = None
        self.throttled = False  # the upstream answered 429: a signal to the adaptive limit
        # Another deployment already answered this request with a 5xx: a 5xx here says more about
        # the request than about this engine, so it does not count against its breaker.
        self.suspect_request = False  # sent -> first streamed chunk (the adaptive limit's signal)
        self.outcome = Outcome.NEUTRAL  # set by whoever delivers the answer; read by __aexit__
        self._ended = False
        self._in_flight = gw.metrics.in_flight_for(deployment.name)
        if not acquired:  # else the admission queue took the slot for this request
            deployment.acquire()
        self._in_flight.inc()
        route.policy.on_start(deployment, ctx)
        preemptible = ctx.task is not None and gw.config.admission.preemptible(CLASSES[ctx.priority])
        self._preemptible = ctx.task if preemptible else None
        if self._preemptible is not None:
            deployment.preemptible[self._preemptible] = time.monotonic()
        self.ticket = deployment.breaker.start() if deployment.breaker is not None else 0
        gw.metrics.count(gw.metrics.upstream_attempts, deployment.name)

    async def send(self, ttfb_s: float | None) -> "Attempt":
        """Send, and wait for the first bytes of the answer; raise AttemptFailed before that (the
        attempt is then ended with the failure's outcome)."""
        try:
            return await self._send(ttfb_s)
        except AttemptFailed as failed:
            self.end(failed.outcome)
            raise

    async def _send(self, ttfb_s: float | None) -> "Attempt":
        ctx, d, gw = self.ctx, self.deployment, self.gw
        path, body, self.injected, headers = upstream_request(ctx, d)
        sent = time.monotonic()
        try:
            try:
                up = self.upstream = await d.backend.open(path, body, ctx.request_id, ttfb_s, headers)
            except asyncio.CancelledError:
                ctx.upstream_reached = True  # cancelled while sending: the upstream may be reading it
                raise
            ctx.upstream_reached = True
            if up.status >= 400:
                raw = await up.read()
                up.release()
                return self._status(up, raw)
            if ctx.stream and up.headers.get("Content-Type", "").startswith("text/event-stream"):
                rest = up.iter_chunks()
                self.chunks = _chain(await rest.__anext__(), rest)  # the first chunk is here
                self.ttfb_s = time.monotonic() - sent
            else:
                self.body = await up.read()
                up.release()
                if not _json_object(self.body):  # an HTML error page, a proxy's text: not an answer
                    gw.metrics.upstream_error(d.name, "bad_body")
                    error = bad_gateway(f"backend `{d.backend.name}` answered {up.status} with a body that is not JSON")
                    raise AttemptFailed("bad_body", Outcome.FAILURE, error)
        except UpstreamTooLarge as e:  # the answer exists but is longer than the gateway holds
            self.abandon()
            gw.metrics.upstream_error(d.name, "too_large")
            error = GatewayError(
                502, f"backend `{d.backend.name}`: {e}", type="upstream_error", code="upstream_response_too_large"
            )
            # Not retried and not held against the engine: the same request would make any engine
            # write the same long answer (n, max_tokens), so it says more about the request.
            raise AttemptFailed("too_large", Outcome.NEUTRAL, error, final=True) from None
        except UpstreamTimeout as e:
            ctx.upstream_reached |= e.phase != "connect"
            self.abandon()
            gw.metrics.upstream_error(d.name, "timeout")
            raise AttemptFailed("timeout", Outcome.FAILURE, gateway_timeout(str(e))) from None
        except (UpstreamConnectError, StopAsyncIteration) as e:
            self.reached = self.upstream is not None
            self.abandon()
            gw.metrics.upstream_error(d.name, "connect")
            error = bad_gateway(str(e) or "upstream sent an empty stream")
            raise AttemptFailed("connect", Outcome.FAILURE, error) from None
        return self

    def _status(self, up: Upstream, raw: bytes) -> "Attempt":
        status, d = up.status, self.deployment
        if status >= 500:
            self.gw.metrics.upstream_error(d.name, "status")
        self.throttled = status == 429
        retry_after = parse_retry_after(up.headers)
        if status in (429, 503) and retry_after:
            d.cool_until = max(d.cool_until, time.monotonic() + retry_after)
        if status in self.gw.resilience.retry_on:
            outcome = Outcome.FAILURE if status >= 500 and not self.suspect_request else Outcome.NEUTRAL
            raise AttemptFailed(f"status_{status}", outcome, upstream=up, body=raw)
        self.body = raw  # a final answer (client 4xx, 5xx not retried): passed through
        return self

    def abandon(self) -> None:
        """Close the upstream connection (the engine frees the slot at once)."""
        if self.upstream is not None:
            self.upstream.close()

    def end(self, outcome: Outcome) -> None:
        """Release the slot and record the outcome. Idempotent: the first call wins."""
        if self._ended:
            return
        self._ended = True
        d = self.deployment
        d.release()
        if self._preemptible is not None:
            d.preemptible.pop(self._preemptible, None)
        self._in_flight.dec()
        self.route.policy.on_finish(d, self.ctx)
        if d.breaker is not None:
            getattr(d.breaker, outcome.value)(self.ticket)
        if outcome is Outcome.SUCCESS:
            d.hedge_losses = 0
        adaptive = d.backend.adaptive
        if adaptive is not None:
            d.backend.max_concurrency = adaptive.sample(self.ttfb_s, outcome is Outcome.FAILURE or self.throttled)
        quotas = self.gw.quotas
        if self.charge is not None and quotas is not None:
            u = self.ctx.usage
            used = (u.prompt_tokens + u.completion_tokens) if self.answered and u.known else None
            quotas.settle(self.charge, used if self.reached else 0)
        admission = self.gw.admission
        if admission is not None:  # last: the slot (and any new room) may go to a waiting request
            if self.answered:
                admission.account(self.ctx)  # the session's attained service
            admission.on_release(d)

    async def __aenter__(self) -> "Attempt":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, AttemptFailed):
            self.end(exc.outcome)
            return
        if exc is not None:  # cancelled (the client went away) or failed while forwarding
            self.abandon()
        self.end(self.outcome)


def _json_object(body: bytes) -> bool:
    """Cheap shape check of a successful answer (the body is parsed later only for its usage)."""
    stripped = body.strip()
    return stripped[:1] == b"{" and stripped[-1:] == b"}"


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
