"""loadtest/native_apis.py over the simulated chat engine: the native Responses / Messages wire
format the gateway's pass-through mode will relay (SDK-parsed, SSE framing checked byte-wise)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from loadtest.engine import EngineConfig, start_engine
from loadtest.native_apis import NativeApis, start_native_apis

TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


@pytest.fixture
async def sim_native() -> AsyncIterator[NativeApis]:
    engine = await start_engine(EngineConfig(seed=3, output_tokens=12), port=0)
    native = await start_native_apis(engine.url, upstream_model="sim-model", api_key="sk-native")
    yield native
    await native.stop()
    await engine.stop()


async def test_responses_over_sim_engine(sim_native: NativeApis) -> None:
    c = AsyncOpenAI(base_url=sim_native.url + "/v1", api_key="sk-native", max_retries=0)
    r = await c.responses.create(model="alias", input="hello")
    assert r.output_text and r.usage.output_tokens == 12 and r.model == "alias"
    r2 = await c.responses.create(model="alias", input="use the tool", tools=[TOOL])
    assert r2.output[0].type == "function_call" and r2.output[0].name == "lookup"
    r3 = await c.responses.create(
        model="alias",
        previous_response_id=r2.id,
        input=[{"type": "function_call_output", "call_id": r2.output[0].call_id, "output": "42"}],
        tools=[TOOL],
    )
    assert r3.output_text  # the engine answers in text after a tool message
    async with aiohttp.ClientSession() as s:
        async with s.post(
            sim_native.url + "/v1/responses",
            json={"model": "alias", "input": "hi", "stream": True},
            headers={"Authorization": "Bearer sk-native"},
        ) as resp:
            assert resp.headers["x-native-api"] == "responses"
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await resp.read()
    events = [e for e in raw.split(b"\n\n") if e]
    seq = []
    for e in events:
        name_line, data_line = e.split(b"\n")
        data = orjson.loads(data_line[6:])
        assert name_line == b"event: " + data["type"].encode()
        seq.append(data["sequence_number"])
    assert seq == list(range(len(events))) and b"response.completed" in events[-1]


async def test_messages_over_sim_engine(sim_native: NativeApis) -> None:
    c = AsyncAnthropic(base_url=sim_native.url, api_key="sk-native", max_retries=0)
    tools = [{"name": "lookup", "input_schema": TOOL["parameters"]}]
    m = await c.messages.create(
        model="claude-x", max_tokens=64, tools=tools, messages=[{"role": "user", "content": "go"}]
    )
    assert m.stop_reason == "tool_use" and m.content[-1].type == "tool_use" and isinstance(m.content[-1].input, dict)
    async with c.messages.stream(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hello"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text and final.usage.output_tokens == 12 and final.usage.input_tokens > 0
    with pytest.raises(Exception) as e:
        await AsyncAnthropic(base_url=sim_native.url, api_key="wrong", max_retries=0).messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert getattr(e.value, "status_code", None) == 401
