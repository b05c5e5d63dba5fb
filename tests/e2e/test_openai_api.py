"""The gateway as an agent sees it: the official openai SDK pointed at Switchyard."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
from openai import AsyncOpenAI

from tests.conftest import BACKEND_KEY, KEY_ALL, KEY_CHAT, sdk

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


async def test_chat_completion_non_stream(client: AsyncOpenAI, engines) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=8)
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.model == "upstream-llama"  # the body says what the upstream served
    assert reply.usage.completion_tokens == 8
    assert raw.headers["x-switchyard-model"] == "chat"
    assert re.fullmatch(r"[0-9a-f]{32}", raw.headers["x-request-id"])
    sent = [e for e in engines if e.stats.requests_total][0].stats.last_request_body
    assert sent["model"] == "upstream-llama" and sent["messages"] == MESSAGES


async def test_chat_stream_parses_and_hides_the_usage_chunk_it_did_not_ask_for(
    client: AsyncOpenAI, gateway, engines
) -> None:
    stream = await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=6, stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks), "the gateway's own usage chunk leaked to the client"
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    # ... but the gateway asked the engine for usage and counted it
    sent = [e for e in engines if e.stats.requests_total][0].stats.last_request_body
    assert sent["stream_options"] == {"include_usage": True}
    metrics = await _get(gateway.base + "/metrics")
    assert 'switchyard_tokens_total{kind="completion",model="chat",team="research"} 6.0' in metrics


async def test_chat_stream_with_usage_requested_by_client(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def _normalise(sse: bytes) -> bytes:
    sse = re.sub(rb'"id":"[^"]*"', b'"id":"X"', sse)
    return re.sub(rb'"created":\d+', b'"created":0', sse)


async def test_stream_bytes_equal_what_the_engine_sends(engine_factory, gateway_factory) -> None:
    engine = await engine_factory(seed=7)
    gw = await gateway_factory(_one_engine_config(engine))
    body = {
        "model": "upstream-llama",
        "messages": MESSAGES,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(engine.url + "/chat/completions", json=body) as r:
            direct = await r.read()
        async with s.post(
            gw.url + "/chat/completions", json={**body, "model": "chat"}, headers={"Authorization": f"Bearer {KEY_ALL}"}
        ) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            through = await r.read()
    assert through.endswith(b"data: [DONE]\n\n")
    assert _normalise(through) == _normalise(direct)


async def test_tools_response_format_and_unknown_fields_pass_through_untouched(client: AsyncOpenAI, engines) -> None:
    reply = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=TOOLS,
        tool_choice="auto",
        extra_body={"top_k": 7, "vendor_flag": {"nested": [1, 2]}},
        max_tokens=20,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in orjson.loads(call.function.arguments)
    sent = [e for e in engines if e.stats.requests_total][0].stats.last_request_body
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"
    assert sent["top_k"] == 7 and sent["vendor_flag"] == {"nested": [1, 2]}


async def test_streamed_tool_calls(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True
    )
    args, name = "", None
    async for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            name = name or tc.function.name
            args += tc.function.arguments or ""
    assert name == "get_weather" and "city" in orjson.loads(args)


async def test_completions_and_embeddings(client: AsyncOpenAI) -> None:
    done = await client.completions.create(model="chat", prompt="Once upon a time", max_tokens=4)
    assert done.choices[0].text and done.usage.completion_tokens == 4
    stream = await client.completions.create(model="chat", prompt="Once", max_tokens=3, stream=True)
    assert "".join([c.choices[0].text async for c in stream])
    emb = await client.embeddings.create(model="embed", input=["a cat", "a dog"])  # SDK asks for base64
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 8
    again = await client.embeddings.create(model="embed", input="a cat", encoding_format="float")
    assert again.data[0].embedding == emb.data[0].embedding


async def test_models_lists_only_what_the_key_may_use(gateway) -> None:
    assert sorted(m.id for m in (await sdk(gateway).models.list()).data) == ["chat", "embed"]
    assert [m.id for m in (await sdk(gateway, KEY_CHAT).models.list()).data] == ["chat"]
    assert (await sdk(gateway).models.retrieve("embed")).id == "embed"


async def test_client_key_is_never_forwarded_upstream(client: AsyncOpenAI, engines) -> None:
    await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=2)
    headers = [e for e in engines if e.stats.requests_total][0].stats.last_request_headers
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["authorization"] == f"Bearer {BACKEND_KEY}"
    assert KEY_ALL not in str(headers)


async def test_request_id_is_honoured(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gateway.url + "/chat/completions",
            headers={"Authorization": f"Bearer {KEY_ALL}", "x-request-id": "trace-123"},
            json={"model": "chat", "messages": MESSAGES, "max_tokens": 1},
        ) as r:
            assert r.status == 200 and r.headers["x-request-id"] == "trace-123"


async def test_health_and_metrics(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.base + "/health/live") as r:
            assert r.status == 200
        for _ in range(50):
            async with s.get(gateway.base + "/health/ready") as r:
                status, body = r.status, await r.json()
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and body["models"] == {"chat": True, "embed": True}
    await sdk(gateway).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
    text = await _get(gateway.base + "/metrics")
    assert re.search(
        r'switchyard_requests_total\{deployment="e\d/upstream-llama",model="chat",status="200",team="research"\} 1\.0',
        text,
    )
    assert (
        "switchyard_request_duration_seconds_bucket" in text and "switchyard_time_to_first_token_seconds_count" in text
    )
    assert re.search(r'switchyard_deployment_in_flight\{deployment="e\d/upstream-llama"\} 0\.0', text)


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return await r.text()


def _one_engine_config(engine) -> dict:
    from tests.conftest import gateway_config

    return gateway_config([engine])
