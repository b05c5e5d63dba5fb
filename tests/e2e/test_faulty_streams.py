"""Faulty upstreams (issue 15): a stream the upstream truncates (a clean end of the body without the
API's terminator) or resets mid-answer reaches the client ending with an error event in the client's
API, never as a normal-looking complete answer, and counts as a broken stream (breaker failure,
metrics, the log line). Chat completions through the openai SDK; the Responses API (openai SDK) and
Anthropic's Messages API (anthropic SDK), both translated from a chat engine and passed through to an
engine that serves them itself. The upstreams are small aiohttp apps on loopback."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from gateway.logs import configure_logging, reset_logging
from tests.conftest import KEY_ALL
from tests.e2e.conftest import api_config

HI = [{"role": "user", "content": "hi"}]
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "up-m"}


def chat_events() -> list[bytes]:
    return [
        b"data: " + orjson.dumps({**CHUNK, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) + b"\n\n"
        for d in ({"role": "assistant", "content": "Hel"}, {"content": "lo"})
    ]


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 0,
    "status": "in_progress",
    "model": "up-m",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}
NATIVE_EVENTS = {
    "/v1/messages": [
        sse(
            "message_start",
            {
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "up-m",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 1},
                }
            },
        ),
        sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
    ],
    "/v1/responses": [
        sse("response.created", {"sequence_number": 0, "response": RESPONSE}),
        sse(
            "response.output_item.added",
            {
                "sequence_number": 1,
                "output_index": 0,
                "item": {"id": "m1", "type": "message", "role": "assistant", "status": "in_progress", "content": []},
            },
        ),
        sse(
            "response.content_part.added",
            {
                "sequence_number": 2,
                "item_id": "m1",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
        sse(
            "response.output_text.delta",
            {"sequence_number": 3, "item_id": "m1", "output_index": 0, "content_index": 0, "delta": "Hel"},
        ),
    ],
}


def faulty(fault: str) -> Callable[[web.Request], Any]:
    """An upstream handler that streams the first events of an answer, then `truncate`: ends the
    body cleanly without the API's terminator; `reset`: resets the TCP connection."""

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        events = chat_events() if path.endswith("/chat/completions") else NATIVE_EVENTS[path]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
            await asyncio.sleep(0.02)
        if fault == "reset":
            await asyncio.sleep(0.1)  # the events reach the gateway (and its client) first
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            transport.abort()
        return resp

    return handle


@pytest.fixture
def upstream(fake_upstream: Callable[..., Any]) -> Callable[[str], Any]:
    """`url = await upstream(fault)`: an upstream that answers every API with that fault."""

    async def start(fault: str) -> str:
        return await fake_upstream(faulty(fault))

    return start


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    out = io.BytesIO()
    writer = configure_logging("info", "json", out=out)  # before the gateway: loggers cache on first use
    try:
        yield lambda: [orjson.loads(x) for x in out.getvalue().splitlines()]
    finally:
        writer.close()
        reset_logging()


def metric(gw: Any, name: str) -> float:
    text = gw.gateway.metrics.render().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def check_broken(gw: Any, log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """The attempt counted as a broken stream: breaker failure, metrics, the log line."""
    for _ in range(50):  # the log line is written after the answer, by the settle task
        requests = [x for x in log_lines() if x["event"] == "request"]
        if requests:
            break
        await asyncio.sleep(0.02)
    assert len(requests) == 1, requests
    assert requests[0]["status"] == 200 and requests[0]["error"] == "broken_stream", requests[0]
    assert metric(gw, "switchyard_broken_streams_total") == 1
    assert metric(gw, "switchyard_upstream_errors_total") == 1
    (d,) = gw.gateway.router.deployments
    assert d.breaker is not None and d.breaker.state == "open"  # one failure opens it (config below)
    assert d.backend.active == 0


def config(url: str, native: bool) -> dict[str, Any]:
    raw = api_config([url], [native])
    raw["resilience"] = {"breaker": {"consecutive_failures": 1, "open_s": 60}}
    return raw


@pytest.mark.parametrize("fault", ["truncate", "reset"])
async def test_a_broken_chat_stream_raises_in_the_openai_sdk(fault, upstream, gateway_factory, log_lines) -> None:
    gw = await gateway_factory(config(await upstream(fault), native=False))
    client = openai.AsyncOpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0)
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="upstream"):
        async for chunk in await client.chat.completions.create(model="m", messages=HI, stream=True):
            texts.append(chunk.choices[0].delta.content or "")
    assert texts == ["Hel", "lo"]  # what came before the break, then the error: never "complete"
    await check_broken(gw, log_lines)


@pytest.mark.parametrize("native", [False, True], ids=["translated", "native"])
@pytest.mark.parametrize("fault", ["truncate", "reset"])
async def test_a_broken_messages_stream_raises_in_the_anthropic_sdk(
    fault, native, upstream, gateway_factory, log_lines
) -> None:
    gw = await gateway_factory(config(await upstream(fault), native))
    client = anthropic.AsyncAnthropic(base_url=gw.base, api_key=KEY_ALL, max_retries=0)
    kinds: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as e:
        async for event in await client.messages.create(model="m", max_tokens=10, messages=HI, stream=True):
            kinds.append(event.type)
    assert e.value.body["error"]["type"] == "api_error"
    assert "content_block_delta" in kinds and "message_stop" not in kinds
    await check_broken(gw, log_lines)


@pytest.mark.parametrize("native", [False, True], ids=["translated", "native"])
@pytest.mark.parametrize("fault", ["truncate", "reset"])
async def test_a_broken_responses_stream_ends_failed(fault, native, upstream, gateway_factory, log_lines) -> None:
    gw = await gateway_factory(config(await upstream(fault), native))
    client = openai.AsyncOpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0)
    events = [e async for e in await client.responses.create(model="m", input="hi", stream=True)]
    kinds = [e.type for e in events]
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    last = events[-1]
    assert last.type == "response.failed", kinds  # the terminal event the SDK's Responses streaming reads
    assert last.response.status == "failed" and last.response.error is not None
    assert [e.sequence_number for e in events] == list(range(len(events)))
    await check_broken(gw, log_lines)
    # the SDK's stream helper refuses to call it a final response
    gw2 = await gateway_factory(config(await upstream(fault), native))
    client2 = openai.AsyncOpenAI(base_url=gw2.url, api_key=KEY_ALL, max_retries=0)
    async with client2.responses.stream(model="m", input="hi") as stream:
        async for _ in stream:
            pass
        with pytest.raises(RuntimeError, match="response.completed"):
            await stream.get_final_response()
