"""Phase 7b, forward: upstream response -> client, as bytes.

Non-streamed: the body is read whole (it is one JSON document) and sent as is; usage is read from
it. Streamed: SSE bytes go out as they arrive through the SSERelay; the client response is
committed (headers sent) only when the first bytes are ready, so until then a failure can still be
answered with a clean error, or retried. After that, a broken upstream ends the stream with an
error event, which the openai SDK raises as APIError.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import orjson
from aiohttp import web

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout
from gateway.context import RequestContext
from gateway.errors import bad_gateway, gateway_timeout
from gateway.sse import SSERelay, count_events, first_events, usage_of_body

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def record_usage(ctx: RequestContext, usage: dict | None) -> None:
    if not usage:
        return
    ctx.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    ctx.usage.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    ctx.usage.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    ctx.usage.known = True


async def forward_body(ctx: RequestContext, upstream: Upstream, body: bytes | None = None) -> web.Response:
    """`body`: already read by the dispatcher (it reads before committing, so a failure there
    can still be retried); else read here."""
    if body is None:
        body = await upstream.read()
        upstream.release()
    ctx.first_byte_at = time.perf_counter()
    if upstream.status < 300:
        record_usage(ctx, usage_of_body(body))
    headers = dict(ctx.response_headers)
    headers["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
    ctx.status = upstream.status
    ctx.response_complete = upstream.status < 300
    if ctx.capture_body:
        ctx.response_body = body
    return web.Response(status=upstream.status, body=body, headers=headers)


class ClientGone(Exception):
    """The client disconnected while we were writing to it."""


async def forward_stream(
    request: web.Request, ctx: RequestContext, upstream: Upstream, strip_usage: bool,
    chunks: AsyncIterator[bytes] | None = None,
) -> web.StreamResponse:
    """`chunks`: the upstream's chunks when the dispatcher already holds them (it waits for the
    first one before choosing this answer, see dispatch.py); else upstream.iter_chunks().

    Retry contract: until `_commit` nothing reached the client and an exception here leaves the
    dispatcher free to answer cleanly; after it, failures end the stream with an error event and
    set ctx.error_type = "broken_stream" (never retried: the client already has bytes)."""
    relay = SSERelay(strip_usage)
    resp: web.StreamResponse | None = None
    captured: list[bytes] | None = [] if ctx.capture_body else None
    try:
        async for chunk in chunks if chunks is not None else upstream.iter_chunks():
            out = relay.feed(chunk)
            if not out:
                continue
            over = ctx.max_stream_events is not None and relay.events_out > ctx.max_stream_events
            if over:  # keep only the events within the limit (gateway/limits/: budgets.cut_streams)
                out = first_events(out, ctx.max_stream_events - (relay.events_out - count_events(out)))
            if resp is None:
                resp = await _commit(request, ctx, upstream.status)
            await resp.write(out)
            if captured is not None:
                captured.append(out)
            if over:
                upstream.close()  # would spend past its budget reservation (gateway/limits/)
                ctx.error_type = "budget_cut"
                await _write_error_event(resp, "The stream was cut: it would pass the hard budget's reservation.",
                                         "budget_exceeded")
                return resp
        tail = relay.flush()
        if tail:
            resp = resp or await _commit(request, ctx, upstream.status)
            await resp.write(tail)
            if captured is not None:
                captured.append(tail)
        upstream.release()
    except (UpstreamTimeout, UpstreamConnectError) as e:
        upstream.close()
        ctx.error_type = "broken_stream"
        if resp is None:  # nothing reached the client yet: a plain error response is still possible
            raise (gateway_timeout if isinstance(e, UpstreamTimeout) else bad_gateway)(str(e)) from None
        await _write_error_event(resp, str(e))
        return resp
    except (ConnectionResetError, asyncio.CancelledError):
        upstream.close()  # the engine sees the disconnect and frees the GPU slot at once
        ctx.status = 499
        ctx.error_type = "client_closed"
        raise
    record_usage(ctx, relay.usage)
    if resp is None:  # the upstream sent an empty body
        resp = await _commit(request, ctx, upstream.status)
    if not relay.done:
        ctx.error_type = "incomplete_stream"
    await resp.write_eof()
    ctx.response_complete = relay.done and upstream.status < 300
    if captured is not None:
        ctx.response_body = b"".join(captured)
    return resp


async def _commit(request: web.Request, ctx: RequestContext, status: int) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers={**ctx.response_headers, **SSE_HEADERS})
    await resp.prepare(request)
    ctx.status = status
    ctx.first_byte_at = time.perf_counter()
    return resp


async def _write_error_event(resp: web.StreamResponse, message: str, code: str = "broken_stream") -> None:
    if code == "broken_stream":
        message = f"The upstream stream broke: {message}"
    event = {"error": {"message": message, "type": "upstream_error", "code": code}}
    try:
        await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await resp.write_eof()
    except ConnectionResetError:
        pass
