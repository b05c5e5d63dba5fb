"""Tool calls, non-stream and stream, as the openai SDK sees them."""

from __future__ import annotations

import orjson
import pytest

from tests.loadtest.helpers import post, split_events

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


async def test_tool_call_non_stream(engine, sdk):
    r = await sdk(engine).chat.completions.create(model="m", messages=ASK, tools=[WEATHER, SEARCH])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("chatcmpl-tool-")
    assert call.function.name == "get_weather"  # first tool when tool_choice is auto
    assert orjson.loads(call.function.arguments) == {"city": "example", "days": 1, "unit": "celsius"}
    assert r.usage.completion_tokens > 1


async def test_named_tool_choice_and_none(engine, sdk):
    client = sdk(engine)
    r = await client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=[WEATHER, SEARCH],
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    assert r.choices[0].message.tool_calls[0].function.name == "search"
    r = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


async def test_tool_call_stream_parses_in_sdk(engine, sdk):
    stream = await sdk(engine).chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.tool_calls for c in chunks[1:]]
    assert all(d is not None and d[0].index == 0 for d in deltas)
    head = deltas[0][0]
    assert head.id.startswith("chatcmpl-tool-") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert all(d[0].id is None and d[0].function.name is None for d in deltas[1:])
    args = "".join(d[0].function.arguments for d in deltas)
    assert orjson.loads(args) == {"city": "example", "days": 1, "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_call_stream_bytes(engine, session):
    body = {"model": "m", "messages": ASK, "tools": [SEARCH], "stream": True}
    _, _, raw = await post(session, engine.url + "/chat/completions", body)
    events = split_events(raw)
    first = orjson.loads(events[1])["choices"][0]["delta"]
    assert list(first) == ["tool_calls"]
    assert list(first["tool_calls"][0]) == ["index", "id", "type", "function"]
    assert first["tool_calls"][0]["function"] == {"name": "search", "arguments": ""}
    frag = orjson.loads(events[2])["choices"][0]["delta"]
    assert list(frag["tool_calls"][0]) == ["index", "function"]
    assert list(frag["tool_calls"][0]["function"]) == ["arguments"]
    assert events[-1] == b"[DONE]"


@pytest.mark.parametrize("stream", [False, True])
async def test_text_answer_after_tool_result(engine, sdk, stream):
    messages = ASK + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C, sunny"},
    ]
    client = sdk(engine)
    if stream:
        s = await client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], stream=True)
        chunks = [c async for c in s]
        assert all(c.choices[0].delta.tool_calls is None for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        r = await client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
        assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content
        assert r.choices[0].message.tool_calls is None


async def test_unknown_named_tool_is_400(engine, session):
    body = {
        "model": "m",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    status, _, raw = await post(session, engine.url + "/chat/completions", body)
    assert status == 400 and "nope" in orjson.loads(raw)["error"]["message"]
