"""Anthropic's Messages API through the whole gateway (issue #14), with the official Anthropic SDK,
against a translating backend (a chat-completions engine) and a native one (a server with its own
/v1/messages: the gateway passes the request through)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.apis.conftest import Answer
from tests.conftest import KEY_ALL
from tests.e2e.conftest import ApiSetup

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
HI = [{"role": "user", "content": "hi"}]


def client(api: ApiSetup, key: str = KEY_ALL) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=api.gw.base, api_key=key, max_retries=0)


async def test_create(api: ApiSetup) -> None:
    api.chat.push(Answer(cached_tokens=4))
    m = await client(api).messages.create(
        model="m",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=HI,
        stop_sequences=["END"],
        metadata={"user_id": "u1"},
    )
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "Hello from the scripted engine."
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (7, 4, 7)
    sent = api.chat.requests[-1]
    assert sent["model"] == "up-m" and sent["stop"] == ["END"] and sent["max_tokens"] == 100
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


async def test_stream(api: ApiSetup) -> None:
    api.chat.push(Answer(cached_tokens=2))
    async with client(api).messages.stream(model="m", max_tokens=50, messages=HI) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == final.content[0].text == "Hello from the scripted engine."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (9, 7, 2)
    stream = await client(api).messages.create(model="m", max_tokens=50, messages=HI, stream=True)
    kinds = [e.type async for e in stream]
    assert kinds[0] == "message_start" and kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_parallel_tool_use_round_trip(api: ApiSetup, streamed: bool) -> None:
    api.chat.push(
        Answer(
            text="Let me check.",
            calls=[("toolu_1", "get_weather", '{"city":"Paris"}'), ("toolu_2", "get_weather", '{"city":"Oslo"}')],
        ),
        Answer(text="Paris 21C, Oslo 5C."),
    )
    c = client(api)
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    first: Any
    if streamed:
        async with c.messages.stream(model="m", max_tokens=200, tools=TOOLS, messages=messages) as s:
            first = await s.get_final_message()
    else:
        first = await c.messages.create(model="m", max_tokens=200, tools=TOOLS, messages=messages)
    assert first.stop_reason == "tool_use"
    assert [(b.id, b.name, b.input) for b in first.content[1:]] == [
        ("toolu_1", "get_weather", {"city": "Paris"}),
        ("toolu_2", "get_weather", {"city": "Oslo"}),
    ]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "5C"}]},
            ],
        },
    ]
    second = await c.messages.create(model="m", max_tokens=200, tools=TOOLS, messages=messages)
    assert second.content[0].text == "Paris 21C, Oslo 5C."
    chat = api.chat.requests[-1]["messages"]
    assert [m["role"] for m in chat] == ["user", "assistant", "tool", "tool"]


async def test_claude_code_traffic_shape(api: ApiSetup) -> None:
    """System blocks with cache_control, many tools, thinking, anthropic-beta, parallel tool turns,
    unknown block types (dropped), a session in metadata.user_id."""
    tools = [
        {
            "name": f"tool_{i}",
            "description": f"Tool {i}",
            "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}},
            **({"cache_control": {"type": "ephemeral"}} if i == 39 else {}),
        }
        for i in range(40)
    ]
    system = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Project rules.", "cache_control": {"type": "ephemeral"}},
    ]
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Run the tests.", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Plan.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_a", "name": "tool_1", "input": {"arg": "x"}},
                {"type": "tool_use", "id": "toolu_b", "name": "tool_2", "input": {"arg": "y"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "ok"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "fail", "is_error": True},
                {"type": "some_future_block", "data": 1},
                {"type": "text", "text": "Continue."},
            ],
        },
    ]
    m = await client(api).messages.create(
        model="m",
        max_tokens=1000,
        system=system,
        tools=tools,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 500},
        metadata={"user_id": '{"device_id":"d","account_uuid":"","session_id":"9f0c-session"}'},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14", "x-claude-code-session-id": "9f0c"},
    )
    assert m.content[0].text == "Hello from the scripted engine."
    sent = api.chat.requests[-1]
    assert len(sent["tools"]) == 40 and "thinking" not in sent
    assert [x["role"] for x in sent["messages"]] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent["messages"][0]["content"] == "You are Claude Code.\n\nProject rules."
    assert sent["messages"][4]["content"] == "Error: fail"
    if api.is_native:  # passed through with the client's beta header, never its key
        assert api.native is not None
        assert api.native.last_headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
        assert api.native.last_request["thinking"] == {"type": "enabled", "budget_tokens": 500}
        assert KEY_ALL not in str(api.native.last_headers)


async def test_count_tokens(api: ApiSetup) -> None:
    c = client(api)
    r = await c.messages.count_tokens(
        model="m", system="You are helpful.", tools=TOOLS, messages=[{"role": "user", "content": "hello there"}]
    )
    small = await c.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    assert r.input_tokens > small.input_tokens > 0
    with pytest.raises(anthropic.NotFoundError) as e:
        await c.messages.count_tokens(model="nope", messages=HI)
    assert e.value.body["error"]["type"] == "not_found_error"


async def test_errors_raise_the_sdk_classes(api: ApiSetup) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await AsyncAnthropic(base_url=api.gw.base, api_key="sk-wrong", max_retries=0).messages.create(
            model="m", max_tokens=10, messages=HI
        )
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key."},
    }
    c = client(api)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens") as bad:
        await c.messages.create(model="m", messages=HI, max_tokens=0)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        await c.messages.create(model="nope", max_tokens=10, messages=HI)
    api.chat.push(Answer(status=400))
    with pytest.raises(anthropic.BadRequestError, match="scripted 400"):
        await c.messages.create(model="m", max_tokens=10, messages=HI)


async def test_stream_broken_after_start_raises(api: ApiSetup) -> None:
    api.chat.push(Answer(cut=True))
    stream = await client(api).messages.create(model="m", max_tokens=10, messages=HI, stream=True)
    with pytest.raises(anthropic.APIStatusError) as e:
        async for _ in stream:
            pass
    assert e.value.body["error"]["type"] == "api_error"
