"""One request, one straight path: authenticate -> read -> route -> phases -> dispatch -> send -> settle.

Every step reads and writes the RequestContext. Whatever happens (an error answered, an upstream
fault, the client going away), `settle` runs once: phases' on_complete, metrics, one log line. It
runs after the answer's last byte was handed to the client, so settling never delays the client and
the logged latency is what the client saw.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.admission.config import CLASSES
from gateway.api_forward import api_error, finish_plain
from gateway.api_routes import begin
from gateway.api_routes import observe as observe_api
from gateway.app_state import current_gateway, request_id_of
from gateway.auth import authenticate
from gateway.context import RequestContext
from gateway.dispatch import dispatch
from gateway.errors import GatewayError, bad_request, error_response, forbidden, model_not_found, too_large
from gateway.forward import echo_model
from gateway.keys import Principal
from gateway.phases import Phase
from gateway.request import parse_into, read_body
from gateway.runtime import Gateway


async def handle_inference(request: web.Request, endpoint: str, api: str | None = None) -> web.StreamResponse:
    """`api`: "responses" | "messages" for another API's request (gateway/apis): it runs as a chat
    request (`endpoint` "chat") and is answered in its own API's shape."""
    gw = current_gateway(request)
    ctx = RequestContext(request_id=request_id_of(request), endpoint=endpoint, started=time.perf_counter())
    ctx.response_headers["x-request-id"] = ctx.request_id
    entered: list[Phase] = []
    gw.requests_in_flight += 1
    try:
        resp = await _answer(request, ctx, gw, entered, api)
        if not resp.prepared:  # a whole answer: send it now, before the phases settle
            resp = _finish(ctx, resp)
            await resp.prepare(request)
            await resp.write_eof()
        return resp
    except (asyncio.CancelledError, ConnectionResetError):
        ctx.status, ctx.error_type = 499, "client_closed"
        raise
    finally:
        _end(gw, ctx, entered)


def _end(gw: Gateway, ctx: RequestContext, entered: list[Phase]) -> None:
    ctx.finished_at = time.perf_counter()
    if entered or ctx.api is not None:
        # Settled in a task of its own: not cut short by a cancellation, and not holding the
        # handler, so the next request on this keep-alive connection is not delayed either.
        gw.spawn(_settle(gw, ctx, entered))
    else:
        _observe(gw, ctx)
        gw.requests_in_flight -= 1


async def _answer(
    request: web.Request, ctx: RequestContext, gw: Gateway, entered: list[Phase], api: str | None
) -> web.StreamResponse:
    try:
        ctx.principal = authenticate(request.headers, gw.keys)
        body = await read_body(request, gw.config.server.max_body_bytes)
        return await _run(request, ctx, gw, entered, api, body, request.headers)
    except GatewayError as e:
        return _refused(ctx, gw, api, e)


async def _run(
    request: web.Request | None,
    ctx: RequestContext,
    gw: Gateway,
    entered: list[Phase],
    api: str | None,
    body: bytes,
    headers: Any,
) -> web.StreamResponse:
    """Read, route, phases, dispatch: everything after authentication. `request` None: an internal
    request (run_internal), which is never streamed."""
    if api is None:
        parse_into(ctx, body, headers)
    else:
        await begin(ctx, gw, api, body, headers)
    if request is None and ctx.stream:
        raise bad_request("Streaming is not supported here; remove `stream`.", param="stream")
    route = gw.router.get(ctx.model)
    if route is None:
        raise model_not_found(ctx.model)
    assert ctx.principal is not None
    if not ctx.principal.may_use(ctx.model):
        raise forbidden(f"This API key may not use model `{ctx.model}`.")
    ctx.route = route
    ctx.priority = gw.priorities.resolve(ctx.principal, headers)
    ctx.response_headers["x-switchyard-model"] = ctx.model
    if ctx.model in gw.echo_aliases:
        ctx.echo_model = ctx.model
    for phase in gw.phases:
        entered.append(phase)
        early = await phase.on_request(ctx)
        if early is not None:
            return early
    if ctx.api is not None:  # Anthropic's names for the rate-limit headers (Messages)
        ctx.response_headers = ctx.api.adapter.rate_headers(ctx.response_headers)
    return await dispatch(request, ctx, gw)


def _refused(ctx: RequestContext, gw: Gateway, api: str | None, e: GatewayError) -> web.Response:
    ctx.status = e.status
    ctx.error_type = ctx.error_type or e.code
    if e.status >= 500:
        gw.log.warning("request_failed", request_id=ctx.request_id, status=e.status, error=e.message)
    if api is not None:  # in the API's own error shape
        if ctx.api is not None:
            ctx.api.answered = True
        return api_error(ctx, gw.apis[api], e)
    return error_response(e, ctx.response_headers)


@dataclass(slots=True)
class InternalAnswer:
    status: int
    body: bytes
    ctx: RequestContext


async def run_internal(
    gw: Gateway,
    principal: Principal,
    endpoint: str,
    body: bytes,
    headers: Any,
    api: str | None = None,
    log_fields: dict[str, Any] | None = None,
    local_only: bool = False,
) -> InternalAnswer:
    """One request from inside the gateway (a Batch API line, gateway/batch/runner.py) through the
    same pipeline as handle_inference: the principal is already known, the body is given, the
    answer is captured instead of sent. Not an HTTP loopback call: the gateway holds only hashes
    of keys (it could not authenticate as the batch's owner), and a loopback would count as a
    client connection and copy every body twice more. Everything after authentication (limits,
    budgets, caches, routing, the admission queue, retries, breakers, settle, metrics, the log
    line) is the code path of a client's request. `headers` carry what a client would send
    (x-switchyard-priority, x-switchyard-session). Never streamed. `local_only`: only local engines
    may take it (gateway/selection.py)."""
    ctx = RequestContext(request_id=gw.new_request_id(), endpoint=endpoint, started=time.perf_counter())
    ctx.principal = principal
    ctx.local_only = local_only
    ctx.task = asyncio.current_task()  # a preemptible class's attempt may be cancelled (gateway/admission/)
    if log_fields:
        ctx.log_fields.update(log_fields)
    entered: list[Phase] = []
    gw.requests_in_flight += 1
    try:
        try:
            if len(body) > gw.config.server.max_body_bytes:
                raise too_large(gw.config.server.max_body_bytes)
            resp = await _run(None, ctx, gw, entered, api, body, headers)
        except GatewayError as e:
            resp = _refused(ctx, gw, api, e)
        resp = _finish(ctx, resp)
        ctx.status = ctx.status or resp.status
        out = resp.body if isinstance(resp, web.Response) and isinstance(resp.body, bytes) else b""
        return InternalAnswer(resp.status, out, ctx)
    except asyncio.CancelledError:
        ctx.status, ctx.error_type = 499, "client_closed"
        raise
    finally:
        _end(gw, ctx, entered)


def _finish(ctx: RequestContext, resp: web.StreamResponse) -> web.StreamResponse:
    """Last touches on a whole answer: another API's shape for what no API forwarder wrote (a cache
    hit, the dispatcher's last failed attempt), the alias in `model` (echo_alias), rate-limit headers
    on every 429."""
    if not isinstance(resp, web.Response):
        return resp
    if ctx.api is not None and not ctx.api.answered:
        resp = finish_plain(ctx, resp)
    if ctx.echo_model is not None and resp.status < 400 and isinstance(resp.body, bytes):
        resp.body = echo_model(resp.body, ctx.echo_model)
    if resp.status == 429:
        rate_limited_headers(resp.headers)
        if ctx.api is not None:
            resp.headers.update(ctx.api.adapter.rate_headers(resp.headers))
    return resp


def rate_limited_headers(headers: Any) -> None:
    """A 429 always says when to come back, in OpenAI's x-ratelimit-* terms too: when no limit of
    the gateway's own set them (an upstream's 429, a deployment quota, the admission queue),
    remaining 0 and the reset from Retry-After."""
    if any(k.lower().startswith("x-ratelimit-") for k in headers):
        return
    retry = headers.get("Retry-After") or "1"
    headers["x-ratelimit-remaining-requests"] = "0"
    headers["x-ratelimit-reset-requests"] = f"{retry}s" if retry.replace(".", "", 1).isdigit() else "1s"


async def _settle(gw: Gateway, ctx: RequestContext, entered: list[Phase]) -> None:
    try:
        if ctx.api is not None and 200 <= ctx.status < 300:
            try:  # the Responses state (the conversation, or where a pass-through answer lives)
                await ctx.api.settle(ctx.deployment)
            except Exception:
                gw.log.exception("api_settle_failed", api=ctx.api.name, request_id=ctx.request_id)
        for phase in reversed(entered):
            try:
                await phase.on_complete(ctx)
            except Exception:  # one phase failing to settle must not stop the others
                gw.log.exception("phase_settle_failed", phase=phase.name, request_id=ctx.request_id)
        _observe(gw, ctx)
    finally:
        gw.requests_in_flight -= 1  # a reload stops the old gateway once this reaches 0


def _observe(gw: Gateway, ctx: RequestContext) -> None:
    gw.metrics.observe(ctx)
    if ctx.api is not None:
        observe_api(gw, ctx)  # the api's counter, and `api_mode` on the log line
    p = ctx.principal
    gw.log.info(
        "request",
        request_id=ctx.request_id,
        key=p.key_name if p else None,
        team=p.team if p else None,
        endpoint=ctx.endpoint_name,
        model=ctx.model or None,
        deployment=ctx.deployment.name if ctx.deployment else None,
        stream=ctx.stream,
        status=ctx.status,
        error=ctx.error_type,
        prompt_tokens=ctx.usage.prompt_tokens if ctx.usage.known else None,
        completion_tokens=ctx.usage.completion_tokens if ctx.usage.known else None,
        latency_ms=round(ctx.latency_s * 1000, 2) if ctx.latency_s is not None else None,
        ttft_ms=round(ctx.ttft_s * 1000, 2) if ctx.ttft_s is not None else None,
        attempts=ctx.attempts,
        priority=CLASSES[ctx.priority],
        **ctx.log_fields,
    )
