"""Forward for another API's request (Responses, Anthropic Messages): the answer in the client's API.

gateway/forward.py hands a request with `ctx.api` set to these forwarders (one attribute check, so
plain chat requests pay nothing). Which way depends on the deployment that answered:

- translated (the deployment speaks chat completions): the phases' taps see the CHAT answer (so
  the cache keeps chat answers, and a hit is translated like a fresh one: `finish_plain`), and the
  client gets it translated: a whole body through `Translated.body`, a stream event by event
  through the request's StreamTranslator (`start()` at commit, `feed()` per chat chunk, `finish()`
  at [DONE], `fail()` when the upstream breaks after the commit);
- pass-through (the deployment serves the API itself): the bytes go out as received; the gateway
  reads usage, the end and the response id on the way (gateway/apis/native.py). The taps are not
  offered a pass-through answer (it is not chat-shaped: the cache does not store it, and a budget's
  stream cut does not apply to it).

Usage goes to `ctx.usage` as chat numbers, for limits, budgets and metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout
from gateway.apis.base import EVENT_STREAM, JSON
from gateway.apis.call import ApiCall
from gateway.apis.native import NativeAnswer
from gateway.attempt import Delivery
from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_gateway, gateway_timeout
from gateway.forward import SSE_HEADERS, echo_model, event_cap, offer, record_usage
from gateway.sse import _boundary, _event_json, _split_events

_DONE = b"data: [DONE]"


def api_error(ctx: RequestContext, adapter: object, err: GatewayError) -> web.Response:
    """A GatewayError answered in the API's error shape (Anthropic's for Messages, with its headers)."""
    body, _ = adapter.error_body(err)  # type: ignore[attr-defined]
    headers = adapter.rate_headers({**ctx.response_headers, **err.headers})  # type: ignore[attr-defined]
    headers["Content-Type"] = JSON
    return web.Response(status=err.status, body=body, headers=headers)


def forward_api_body(ctx: RequestContext, upstream: Upstream, body: bytes) -> tuple[web.Response, Delivery]:
    call = ctx.api
    assert call is not None
    ctx.first_byte_at = time.perf_counter()
    status = upstream.status
    ok = status < 300
    headers = dict(ctx.response_headers)
    if ctx.deployment is not None and call.native(ctx.deployment):
        answer = call.native_answer = NativeAnswer(call.name)
        if ok:
            answer.read_body(body)
            record_usage(ctx, answer.usage)
        out = body  # as received (pipeline.finish rewrites `model` only with echo_alias)
        headers["Content-Type"] = upstream.headers.get("Content-Type", JSON)
    else:
        for tap in ctx.taps:
            tap.on_body(body)  # the chat answer: what the cache stores
        out = call.tr.body(body, status)
        if ok:
            record_usage(ctx, call.tr.usage)
        headers["Content-Type"] = JSON
    if not ok:
        headers = call.adapter.rate_headers(headers)
    ctx.status = status
    ctx.response_complete = ok
    call.answered = True
    return web.Response(status=status, body=out, headers=headers), (Delivery.COMPLETE if ok else Delivery.ERROR_STATUS)


async def forward_api_stream(
    request: web.Request, ctx: RequestContext, upstream: Upstream, chunks: AsyncIterator[bytes]
) -> tuple[web.StreamResponse, Delivery]:
    call = ctx.api
    assert call is not None
    call.answered = True
    if ctx.deployment is not None and call.native(ctx.deployment):
        return await _native_stream(request, ctx, upstream, chunks, call)
    return await _translated_stream(request, ctx, upstream, chunks, call)


async def _translated_stream(
    request: web.Request, ctx: RequestContext, upstream: Upstream, chunks: AsyncIterator[bytes], call: ApiCall
) -> tuple[web.StreamResponse, Delivery]:
    st = call.tr.stream_translator()
    head = st.start()  # response.created ... / message_start: written at the commit, numbered first
    resp: web.StreamResponse | None = None
    buf, done = b"", False
    max_event = event_cap(ctx)
    try:
        async for chunk in chunks:
            buf = buf + chunk if buf else chunk
            cut_at = _boundary(buf)
            block, buf = buf[:cut_at], buf[cut_at:]
            if len(buf) > max_event:  # memory is bounded: the stream counts as broken
                raise UpstreamConnectError(f"the upstream sent an SSE event over {max_event} bytes")
            if cut_at == 0:
                continue
            events = _split_events(block)
            cut = offer(ctx.taps, block, len(events)) if ctx.taps else None
            out: list[bytes] = []
            for event in events[: cut.keep] if cut is not None else events:
                if _DONE in event:
                    done = True
                    continue
                obj = _event_json(event)
                if isinstance(obj, dict):
                    out.append(st.feed(obj))
                    if st.failed:  # an error chunk from the engine: the translator ended the stream
                        break
            if resp is None:
                resp = await _commit(request, ctx, upstream.status, head)
            await resp.write(b"".join(out))
            if cut is not None or st.failed:
                upstream.close()
                if cut is not None:
                    ctx.error_type = cut.code
                    await _end(resp, st.fail(cut.message))
                    return resp, Delivery.CUT
                ctx.error_type = "upstream_error"
                await _end(resp, b"")
                return resp, Delivery.BROKEN
        upstream.release()
        if not done and _DONE not in buf:  # the body ended cleanly but the answer did not: truncated
            raise UpstreamConnectError("it ended without [DONE], the answer is incomplete")
    except (UpstreamTimeout, UpstreamConnectError) as e:
        upstream.close()
        ctx.error_type = "broken_stream"
        record_usage(ctx, st.usage)  # a usage chunk seen before the break is still what it cost
        if resp is None:  # nothing reached the client yet: a plain error answer is still possible
            raise (gateway_timeout if isinstance(e, UpstreamTimeout) else bad_gateway)(str(e)) from None
        await _end(resp, st.fail(f"The upstream stream broke: {e}"))
        return resp, Delivery.BROKEN
    except (ConnectionResetError, asyncio.CancelledError):
        upstream.close()  # the engine sees the disconnect and frees the GPU slot at once
        ctx.status, ctx.error_type = 499, "client_closed"
        raise
    if resp is None:
        resp = await _commit(request, ctx, upstream.status, head)
    record_usage(ctx, st.usage)
    await _end(resp, st.finish(None))
    ctx.response_complete = upstream.status < 300
    return resp, Delivery.COMPLETE


async def _native_stream(
    request: web.Request, ctx: RequestContext, upstream: Upstream, chunks: AsyncIterator[bytes], call: ApiCall
) -> tuple[web.StreamResponse, Delivery]:
    answer = call.native_answer = NativeAnswer(call.name, event_cap(ctx))
    alias = ctx.echo_model
    resp: web.StreamResponse | None = None
    try:
        async for chunk in chunks:
            out = answer.feed(chunk)
            if not out:
                continue
            if resp is None:
                resp = await _commit(request, ctx, upstream.status, b"")
            await resp.write(echo_model(out, alias) if alias else out)
        tail = answer.flush()
        if tail and (answer.done or answer.failed):  # else a cut event: not sent
            resp = resp or await _commit(request, ctx, upstream.status, b"")
            await resp.write(echo_model(tail, alias) if alias else tail)
        upstream.release()
        if not answer.done and not answer.failed:  # the body ended cleanly but the answer did not
            end = "message_stop" if call.name == "messages" else "response.completed"
            raise UpstreamConnectError(f"it ended without {end}, the answer is incomplete")
    except (UpstreamTimeout, UpstreamConnectError) as e:
        upstream.close()
        ctx.error_type = "broken_stream"
        record_usage(ctx, answer.usage)  # what was reported before the break is still what it cost
        if resp is None:
            raise (gateway_timeout if isinstance(e, UpstreamTimeout) else bad_gateway)(str(e)) from None
        await _end(resp, answer.failure_event(f"The upstream stream broke: {e}"))
        return resp, Delivery.BROKEN
    except (ConnectionResetError, asyncio.CancelledError):
        upstream.close()
        ctx.status, ctx.error_type = 499, "client_closed"
        raise
    record_usage(ctx, answer.usage)
    if resp is None:  # nothing but the end
        resp = await _commit(request, ctx, upstream.status, b"")
    await _end(resp, b"")
    if answer.failed:  # the engine's own error event, passed on: the client has it; the engine failed
        ctx.error_type = "upstream_error"
        return resp, Delivery.BROKEN
    ctx.response_complete = upstream.status < 300
    return resp, Delivery.COMPLETE


def finish_plain(ctx: RequestContext, resp: web.Response) -> web.Response:
    """A chat-shaped answer no API forwarder wrote (a cache hit; the last failed attempt's error
    passed on by the dispatcher), in the API's shape. Errors: an OpenAI-shaped body is translated,
    one already in the API's shape is re-worded the same (both read the same message)."""
    call = ctx.api
    assert call is not None
    raw = resp.body if isinstance(resp.body, bytes) else b""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-type", "content-length")}
    if resp.status >= 400:
        body, ctype = call.tr.body(raw, resp.status), JSON
        headers = call.adapter.rate_headers(headers)
    elif ctx.stream:
        body, ctype = translate_sse(call, raw), EVENT_STREAM
        headers.update({k: v for k, v in SSE_HEADERS.items() if k != "Content-Type"})
    else:
        body, ctype = call.tr.body(raw, resp.status), JSON
    call.answered = True
    headers["Content-Type"] = ctype
    return web.Response(status=resp.status, body=body, headers=headers)


def translate_sse(call: ApiCall, stream: bytes) -> bytes:
    """A whole chat SSE stream (a cache replay) -> the API's stream."""
    st = call.tr.stream_translator()
    out = [st.start()]
    for event in _split_events(stream):
        obj = _event_json(event)
        if isinstance(obj, dict):
            out.append(st.feed(obj))
    out.append(st.finish(None))
    return b"".join(out)


async def _commit(request: web.Request, ctx: RequestContext, status: int, first: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers={**ctx.response_headers, **SSE_HEADERS})
    await resp.prepare(request)
    ctx.status = status
    ctx.first_byte_at = time.perf_counter()
    if first:
        await resp.write(first)
    return resp


async def _end(resp: web.StreamResponse, last: bytes) -> None:
    try:
        if last:
            await resp.write(last)
        await resp.write_eof()
    except ConnectionResetError:
        pass
