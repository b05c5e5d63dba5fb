"""Forward: upstream answer -> client, as bytes.

Non-streamed: the body (read whole by the attempt: it is one JSON document) is sent as is; usage is
read from it. Streamed: SSE bytes go out as they arrive through the SSERelay; the client response
is committed (headers sent) only when the first bytes are ready, so until then a failure can still
be answered with a clean error, or retried. After that, a broken upstream (reset, timed out, or a
body that ends without `data: [DONE]`) ends the stream with an error event, which the openai SDK
raises as APIError, and the delivery counts as BROKEN.

Phases see the answer through the request's taps (gateway/phases.py ResponseTap): the whole body,
or each batch of complete SSE events just before it is written. A tap may cut a stream.
Each forwarder returns the response and how the delivery ended (gateway/attempt.py Delivery), from
which the attempt's breaker outcome is decided.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout
from gateway.attempt import Delivery
from gateway.context import RequestContext
from gateway.errors import bad_gateway, gateway_timeout
from gateway.phases import Cut
from gateway.sse import MAX_EVENT_BYTES, SSERelay, count_events, first_events, usage_of_body

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


_MODEL = re.compile(rb'("model"\s*:\s*")(?:[^"\\]|\\.)*"')


def echo_model(data: bytes, alias: str) -> bytes:
    """`"model": "<upstream name>"` -> the alias the client asked for (models[].echo_alias), in a
    JSON body or a block of SSE events, without parsing them. Inside JSON strings quotes are
    escaped, so only real `"model"` string fields match."""
    value = orjson.dumps(alias)
    return _MODEL.sub(lambda m: m.group(1) + value[1:], data)


def record_usage(ctx: RequestContext, usage: dict | None) -> None:
    if not usage:
        return
    ctx.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    ctx.usage.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    ctx.usage.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    ctx.usage.known = True


def event_cap(ctx: RequestContext) -> int:
    """What a stream may hold of one upstream SSE event (server.max_upstream_event_bytes)."""
    return ctx.deployment.backend.max_event_bytes if ctx.deployment is not None else MAX_EVENT_BYTES


def forward_body(ctx: RequestContext, upstream: Upstream, body: bytes) -> tuple[web.Response, Delivery]:
    """A whole answer already read by the attempt (it reads before committing, so a failure there
    can still be retried)."""
    if ctx.api is not None:  # another API's request: translated or passed through (gateway/api_forward.py)
        from gateway.api_forward import forward_api_body

        return forward_api_body(ctx, upstream, body)
    ctx.first_byte_at = time.perf_counter()
    ok = upstream.status < 300
    if ok:
        record_usage(ctx, usage_of_body(body))
    headers = dict(ctx.response_headers)
    headers["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
    ctx.status = upstream.status
    ctx.response_complete = ok
    for tap in ctx.taps:
        tap.on_body(body)
    return web.Response(status=upstream.status, body=body, headers=headers), (
        Delivery.COMPLETE if ok else Delivery.ERROR_STATUS
    )


async def forward_stream(
    request: web.Request, ctx: RequestContext, upstream: Upstream, strip_usage: bool, chunks: AsyncIterator[bytes]
) -> tuple[web.StreamResponse, Delivery]:
    """`chunks`: the upstream's chunks, the first already received (see gateway/attempt.py).

    Until `_commit` nothing reached the client and an exception here leaves the dispatcher free to
    answer cleanly; after it, an upstream failure ends the stream with an error event (Delivery.BROKEN;
    never retried: the client already has bytes)."""
    if ctx.api is not None:
        from gateway.api_forward import forward_api_stream

        return await forward_api_stream(request, ctx, upstream, chunks)
    relay = SSERelay(strip_usage, event_cap(ctx))
    alias = ctx.echo_model
    resp: web.StreamResponse | None = None
    taps = ctx.taps
    try:
        async for chunk in chunks:
            out = relay.feed(chunk)
            if not out:
                continue
            cut = _offer(taps, out) if taps else None
            if cut is not None:
                out = first_events(out, cut.keep)
            if resp is None:
                resp = await _commit(request, ctx, upstream.status)
            if out:
                await resp.write(echo_model(out, alias) if alias else out)
            if cut is not None:
                upstream.close()
                ctx.error_type = cut.code
                await _write_error_event(resp, cut.message, cut.code)
                return resp, Delivery.CUT
        tail = relay.flush()
        if tail and relay.done:  # `data: [DONE]` without its blank line; else a cut event, dropped
            resp = resp or await _commit(request, ctx, upstream.status)
            if taps:
                _offer(taps, tail)
            await resp.write(echo_model(tail, alias) if alias else tail)
        upstream.release()
        if not relay.done:  # the body ended cleanly but the answer did not: truncated upstream
            raise UpstreamConnectError("it ended without [DONE], the answer is incomplete")
    except (UpstreamTimeout, UpstreamConnectError) as e:
        upstream.close()
        ctx.error_type = "broken_stream"
        record_usage(ctx, relay.usage)  # a usage chunk seen before the break is still what it cost
        if resp is None:  # nothing reached the client yet: a plain error response is still possible
            raise (gateway_timeout if isinstance(e, UpstreamTimeout) else bad_gateway)(str(e)) from None
        await _write_error_event(resp, f"The upstream stream broke: {e}")
        return resp, Delivery.BROKEN
    except (ConnectionResetError, asyncio.CancelledError):
        upstream.close()  # the engine sees the disconnect and frees the GPU slot at once
        ctx.status = 499
        ctx.error_type = "client_closed"
        raise
    record_usage(ctx, relay.usage)
    if resp is None:  # the upstream sent nothing but [DONE]
        resp = await _commit(request, ctx, upstream.status)
    await resp.write_eof()
    ctx.response_complete = upstream.status < 300
    return resp, Delivery.COMPLETE


def _offer(taps: list, out: bytes) -> Cut | None:
    return offer(taps, out, count_events(out))


def offer(taps: list, out: bytes, n: int) -> Cut | None:
    """Offer a block of `n` complete SSE events to the request's taps; the first Cut wins."""
    for tap in taps:
        cut = tap.on_events(out, n)
        if cut is not None:
            return cut
    return None


async def _commit(request: web.Request, ctx: RequestContext, status: int) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers={**ctx.response_headers, **SSE_HEADERS})
    await resp.prepare(request)
    ctx.status = status
    ctx.first_byte_at = time.perf_counter()
    return resp


async def _write_error_event(resp: web.StreamResponse, message: str, code: str = "broken_stream") -> None:
    event = {"error": {"message": message, "type": "upstream_error", "code": code}}
    try:
        await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await resp.write_eof()
    except ConnectionResetError:
        pass
