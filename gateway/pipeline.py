"""One request, one straight path: authenticate -> read -> route -> phases -> dispatch -> settle.

Every step reads and writes the RequestContext. Whatever happens (an error answered, an upstream
fault, the client going away), `settle` runs once: phases' on_complete, metrics, one log line.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.auth import authenticate
from gateway.context import RequestContext
from gateway.dispatch import dispatch
from gateway.errors import GatewayError, error_response, forbidden, model_not_found
from gateway.phases import Phase
from gateway.request import parse_into, read_body
from gateway.runtime import Gateway, GatewayRef

GATEWAY = web.AppKey("gateway", GatewayRef)


def current_gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY].current


def request_id_of(request: web.Request) -> str:
    """The client's x-request-id when it is sane (<= 128 printable ASCII chars), else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable():
        return rid
    return current_gateway(request).new_request_id()


async def handle_inference(request: web.Request, endpoint: str) -> web.StreamResponse:
    gw = current_gateway(request)
    ctx = RequestContext(request_id=request_id_of(request), endpoint=endpoint, started=time.perf_counter())
    ctx.response_headers["x-request-id"] = ctx.request_id
    entered: list[Phase] = []
    cancelled = False
    gw.requests_in_flight += 1
    try:
        ctx.principal = authenticate(request.headers, gw.keys)
        parse_into(ctx, await read_body(request, gw.config.server.max_body_bytes), request.headers)
        route = gw.router.get(ctx.model)
        if route is None:
            raise model_not_found(ctx.model)
        if not ctx.principal.may_use(ctx.model):
            raise forbidden(f"This API key may not use model `{ctx.model}`.")
        ctx.route = route
        ctx.response_headers["x-switchyard-model"] = ctx.model
        for phase in gw.phases:
            entered.append(phase)
            early = await phase.on_request(ctx)
            if early is not None:
                return early
        return await dispatch(request, ctx, gw)
    except GatewayError as e:
        ctx.status = e.status
        ctx.error_type = ctx.error_type or e.code
        if e.status >= 500:
            gw.log.warning("request_failed", request_id=ctx.request_id, status=e.status, error=e.message)
        return error_response(e, ctx.response_headers)
    except (asyncio.CancelledError, ConnectionResetError):
        ctx.status, ctx.error_type = 499, "client_closed"
        cancelled = True
        raise
    finally:
        ctx.finished_at = time.perf_counter()
        try:
            if entered and cancelled:
                gw.spawn(_settle(gw, ctx, entered))  # must not be cut short by the cancellation
            elif entered:
                await _settle(gw, ctx, entered)
            else:
                _observe(gw, ctx)
        finally:
            gw.requests_in_flight -= 1


async def _settle(gw: Gateway, ctx: RequestContext, entered: list[Phase]) -> None:
    for phase in reversed(entered):
        try:
            await phase.on_complete(ctx)
        except Exception:  # one phase failing to settle must not stop the others
            gw.log.exception("phase_settle_failed", phase=phase.name, request_id=ctx.request_id)
    _observe(gw, ctx)


def _observe(gw: Gateway, ctx: RequestContext) -> None:
    gw.metrics.observe(ctx)
    p = ctx.principal
    gw.log.info(
        "request",
        request_id=ctx.request_id,
        key=p.key_name if p else None,
        team=p.team if p else None,
        endpoint=ctx.endpoint,
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
        cache=ctx.cache_status,
    )
