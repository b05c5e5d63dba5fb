"""kind = "litellm": the openai SDK through the gateway to a simulated Anthropic Messages API on
loopback (loadtest/anthropic_sim.py), text and tool calls, streamed and not, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from loadtest.anthropic_sim import AnthropicSim, start_anthropic_sim
from tests.conftest import gateway_config, sdk

ANT_KEY = "sk-ant-simulated-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    }
]
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]

pytestmark = pytest.mark.slow  # `import litellm`: ~4 s of CPU, once per process


@pytest.fixture
async def sim() -> AsyncIterator[AnthropicSim]:
    s = await start_anthropic_sim(api_key=ANT_KEY)
    yield s
    await s.stop()


async def claude_gateway(gateway_factory: Any, sim: AnthropicSim, key: str = ANT_KEY) -> Any:
    raw = gateway_config([])
    raw["backends"] = [{"name": "anthropic", "kind": "litellm", "url": sim.url, "api_key": key}]
    raw["models"] = [
        {"name": "claude", "deployments": [{"backend": "anthropic", "model": "anthropic/claude-sonnet-4-5"}]}
    ]
    raw["keys"] = raw["keys"][:1]
    raw["resilience"] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.02}
    return await gateway_factory(raw)


async def test_text_answer_non_streamed_and_streamed(gateway_factory, sim) -> None:
    client = sdk(await claude_gateway(gateway_factory, sim))
    raw = await client.chat.completions.with_raw_response.create(model="claude", messages=ASK, max_tokens=6)
    r = raw.parse()
    assert raw.headers["x-switchyard-deployment"] == "anthropic/anthropic/claude-sonnet-4-5"
    text = r.choices[0].message.content
    assert len(text.split()) == 6 and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens > 0
    # what the provider received: Anthropic's shape, with the backend's key (never the client's)
    assert sim.last_request["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert sim.last_request["max_tokens"] == 6 and sim.last_headers["x-api-key"] == ANT_KEY
    stream = await client.chat.completions.create(model="claude", messages=ASK, max_tokens=6, stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # not asked for: none sent


async def test_streamed_usage_when_asked(gateway_factory, sim) -> None:
    client = sdk(await claude_gateway(gateway_factory, sim))
    stream = await client.chat.completions.create(
        model="claude", messages=ASK, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


async def test_tool_call_round_trip(gateway_factory, sim) -> None:
    client = sdk(await claude_gateway(gateway_factory, sim))
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    r = await client.chat.completions.create(model="claude", messages=ask, tools=TOOLS, max_tokens=50)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "example", "days": 1}
    assert sim.last_request["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}

    stream = await client.chat.completions.create(model="claude", messages=ask, tools=TOOLS, max_tokens=50, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
        if c.choices and c.choices[0].finish_reason:
            finish = c.choices[0].finish_reason
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "example", "days": 1} and calls[0]["id"] == call.id

    follow = ask + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    r2 = await client.chat.completions.create(model="claude", messages=follow, tools=TOOLS, max_tokens=5)
    assert r2.choices[0].message.content and not r2.choices[0].message.tool_calls
    result = sim.last_request["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id


async def test_provider_5xx_is_retried_and_a_bad_provider_key_is_the_gateways_502(gateway_factory, sim) -> None:
    client = sdk(await claude_gateway(gateway_factory, sim))
    sim.fail_next(500, kind="api_error")
    r = await client.chat.completions.create(model="claude", messages=ASK, max_tokens=3)
    assert r.choices[0].message.content and sim.requests >= 2

    bad = sdk(await claude_gateway(gateway_factory, sim, key="sk-ant-wrong"))
    with pytest.raises(openai.APIStatusError) as e:
        await bad.chat.completions.create(model="claude", messages=ASK, max_tokens=3)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_misconfigured"
    assert "sk-ant-wrong" not in str(e.value.body)


async def test_provider_rate_limit_passes_through_as_429(gateway_factory, sim) -> None:
    client = sdk(await claude_gateway(gateway_factory, sim))
    sim.fail_next(429, count=5, kind="rate_limit_error")
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="claude", messages=ASK, max_tokens=3)


async def test_embeddings_on_a_litellm_backend_are_refused_cleanly(gateway_factory, sim) -> None:
    gw = await claude_gateway(gateway_factory, sim)
    with pytest.raises(openai.APIStatusError) as e:
        await sdk(gw).embeddings.create(model="claude", input="x")
    assert e.value.status_code == 502  # the backend does not serve the path: the gateway's setup
