"""Stream replay: whatever form the answer was stored in, the openai SDK reads the hit as if the
engine had answered (stream or not, usage chunk only when asked, tool calls intact)."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.cache.replay import from_sse, storable, to_sse
from tests.cache.helpers import Q, cache_config, chat, chat_stream, text_of
from tests.cache.test_exact import TOOLS
from tests.conftest import KEY_ALL, sdk


@pytest.fixture
async def gw(gateway_factory, engine_factory):
    return await gateway_factory(cache_config([await engine_factory()]))


async def test_non_streamed_answer_replayed_as_a_stream(gw) -> None:
    client = sdk(gw)
    _, reply = await chat(client)
    status, chunks = await chat_stream(client, stream_options={"include_usage": True})
    assert status == "hit-exact"
    assert text_of(chunks) == reply.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    status, chunks = await chat_stream(client)  # no usage asked: no usage chunk
    assert status == "hit-exact" and all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


async def test_streamed_answer_stored_and_replayed_both_ways(gw) -> None:
    client = sdk(gw)
    status, streamed = await chat_stream(client)  # the client asked for no usage; the store still has it
    assert status == "miss"
    status, reply = await chat(client)
    assert status == "hit-exact"
    assert reply.choices[0].message.content == text_of(streamed)
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    assert reply.id == streamed[0].id
    status, again = await chat_stream(client, stream_options={"include_usage": True})
    assert status == "hit-exact" and text_of(again) == text_of(streamed)
    assert again[-1].usage.total_tokens == reply.usage.total_tokens


async def test_streamed_tool_calls_replayed(gw) -> None:
    client = sdk(gw)
    _, streamed = await chat_stream(client, tools=TOOLS, tool_choice="required")
    status, reply = await chat(client, tools=TOOLS, tool_choice="required")
    assert status == "hit-exact" and reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "weather" and call.id
    parts = [tc.function.arguments or "" for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert call.function.arguments == "".join(parts)
    _, replayed = await chat_stream(client, tools=TOOLS, tool_choice="required")
    calls = [tc for c in replayed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "weather" and calls[0].function.arguments == call.function.arguments


async def test_completions_endpoint_cached_and_replayed(gw) -> None:
    client = sdk(gw)
    first = await client.completions.create(model="chat", prompt="Once upon a time", temperature=0)
    raw = await client.completions.with_raw_response.create(
        model="chat", prompt="Once upon a time", temperature=0, stream=True
    )
    assert raw.headers["x-switchyard-cache"] == "hit-exact"
    text = "".join([c.choices[0].text async for c in raw.parse() if c.choices])
    assert text == first.choices[0].text


async def test_replayed_stream_is_well_formed_sse(gw) -> None:
    await chat(sdk(gw))
    async with aiohttp.ClientSession() as s:
        body = {"model": "chat", "messages": Q, "temperature": 0, "stream": True}
        async with s.post(gw.url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY_ALL}"}) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            raw = await r.read()
    events = raw.split(b"\n\n")
    assert events[-2] == b"data: [DONE]" and events[-1] == b""
    assert all(e.startswith(b"data: ") for e in events[:-1])


def test_round_trip_and_storable_rules() -> None:
    body = {
        "id": "x",
        "created": 1,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    assert from_sse(to_sse(body, "chat", True), "chat", None) == body
    assert storable(body, False)
    cut = {**body, "choices": [{**body["choices"][0], "finish_reason": "length"}]}
    assert not storable(cut, False) and storable(cut, True)
    assert not storable({"error": {"message": "x"}}, True)
    assert from_sse(b'data: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n', "chat", None) is None
