"""The official Anthropic SDK parses what the Messages translators produce (native server over a
scripted chat engine): create / stream / get_final_message, tool_use round trips, errors."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from anthropic import AsyncAnthropic

from gateway.apis.messages import MessagesAdapter
from gateway.errors import GatewayError
from tests.apis.conftest import Answer, ScriptedChat

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def client(base: str, key: str = "sk-ant-a") -> AsyncAnthropic:
    return AsyncAnthropic(base_url=base, api_key=key, max_retries=0)


async def test_create_text(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(cached_tokens=4))
    m = await client(native.url).messages.create(
        model="claude-x",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}],
        stop_sequences=["END"],
        extra_body={"top_k": 5},
        metadata={"user_id": "u1"},
    )
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == "claude-x"
    assert m.content[0].type == "text" and m.content[0].text == "Hello from the scripted engine."
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (7, 4, 7)
    sent = scripted.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (sent["max_tokens"], sent["stop"], sent["top_k"], sent["user"]) == (100, ["END"], 5, "u1")


async def test_stop_sequence(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(stop_reason="END"), Answer(stop_reason="END"))
    c = client(native.url)
    kwargs = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["END"]}
    m = await c.messages.create(**kwargs)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "END")
    async with c.messages.stream(**kwargs) as s:
        m = await s.get_final_message()
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "END")


async def test_stream_text(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(cached_tokens=2))
    async with client(native.url).messages.stream(
        model="c", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == final.content[0].text == "Hello from the scripted engine."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (9, 7, 2)


async def test_stream_raw_events(native) -> None:
    stream = await client(native.url).messages.create(
        model="c", max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    kinds = [e.type async for e in stream]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_parallel_tool_use_round_trip(native, scripted: ScriptedChat, streamed: bool) -> None:
    scripted.push(
        Answer(
            text="Let me check.",
            calls=[("toolu_1", "get_weather", '{"city":"Paris"}'), ("toolu_2", "get_weather", '{"city":"Oslo"}')],
        ),
        Answer(text="Paris 21C, Oslo 5C."),
    )
    c = client(native.url)
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    first: Any
    if streamed:
        async with c.messages.stream(model="c", max_tokens=200, tools=TOOLS, messages=messages) as s:
            first = await s.get_final_message()
    else:
        first = await c.messages.create(model="c", max_tokens=200, tools=TOOLS, messages=messages)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in first.content[1:]] == [
        ("toolu_1", "get_weather", {"city": "Paris"}),
        ("toolu_2", "get_weather", {"city": "Oslo"}),
    ]
    sent = scripted.requests[-1]
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
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
    second = await c.messages.create(model="c", max_tokens=200, tools=TOOLS, messages=messages)
    assert second.content[0].text == "Paris 21C, Oslo 5C."
    chat = scripted.requests[-1]["messages"]
    assert [m["role"] for m in chat] == ["user", "assistant", "tool", "tool"]
    assert chat[1]["content"] == "Let me check." and [t["id"] for t in chat[1]["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert chat[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "5C"},
    ]


async def test_tool_choice_mapping(native, scripted: ScriptedChat) -> None:
    c = client(native.url)
    base = {"model": "c", "max_tokens": 10, "tools": TOOLS, "messages": [{"role": "user", "content": "x"}]}
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ]:
        await c.messages.create(**base, tool_choice=choice)
        assert scripted.requests[-1]["tool_choice"] == expected
    await c.messages.create(**base, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert scripted.requests[-1]["parallel_tool_calls"] is False


async def test_count_tokens(native) -> None:
    r = await client(native.url).messages.count_tokens(
        model="c", system="You are helpful.", tools=TOOLS, messages=[{"role": "user", "content": "hello there"}]
    )
    assert r.input_tokens > 10


async def test_bad_requests(native) -> None:
    c = client(native.url)
    with pytest.raises(anthropic.BadRequestError) as e:
        await c.messages.create(model="c", max_tokens=10, messages=[], extra_body={})
    assert e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="built-in"):
        await c.messages.create(
            model="c",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )


async def test_stream_cut_raises_api_error(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(cut=True))
    stream = await client(native.url).messages.create(
        model="c", max_tokens=10, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as e:
        async for _ in stream:
            pass
    assert e.value.body["error"]["type"] == "api_error"


ERRORS = [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (403, anthropic.PermissionDeniedError, "permission_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (413, anthropic.APIStatusError, "request_too_large"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (503, anthropic.InternalServerError, "overloaded_error"),
    (529, anthropic.InternalServerError, "overloaded_error"),
]


async def test_error_bodies_raise_matching_sdk_errors(loopback_receiver) -> None:
    adapter = MessagesAdapter()
    state = {"status": 400}

    async def handler(request: web.Request) -> web.Response:
        status = state["status"]
        headers = {"Retry-After": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
        body, extra = adapter.error_body(GatewayError(status, f"boom {status}", headers=headers))
        return web.Response(status=status, body=body, content_type="application/json", headers=extra)

    base = await loopback_receiver("/v1/messages", handler)
    c = client(base)
    for status, cls, kind in ERRORS:
        state["status"] = status
        with pytest.raises(cls) as e:
            await c.messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == status
        assert e.value.body == {"type": "error", "error": {"type": kind, "message": f"boom {status}"}}
        if status == 429:
            h = e.value.response.headers
            assert h["retry-after"] == "2" and h["anthropic-ratelimit-requests-remaining"] == "0"
            assert h["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_error_json_shape() -> None:
    body, _ = MessagesAdapter().error_body(GatewayError(429, "slow down"))
    assert orjson.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
