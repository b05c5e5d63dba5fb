"""The Responses and Anthropic Messages APIs through Switchyard to real engines (issue 14): passed
through to vLLM, which serves both natively, and translated to chat completions for llama.cpp, which
serves neither. The official SDKs parse the answers; usage is the engine's own count."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic import AsyncAnthropic

from loadtest.real_engines import MODEL
from tests.real.helpers import KEY, engine_counters, real_config

QUESTION = "What is the capital of France?"
GREEDY = {"temperature": 0}  # this anthropic SDK has no `temperature` argument; the API takes it


@pytest.fixture(params=["vllm-native", "llamacpp-translated"])
def setup(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    """(engine, gateway config): vLLM with its native Responses and Messages APIs passed through,
    llama.cpp with both translated."""
    native = request.param == "vllm-native"
    engine = request.getfixturevalue("vllm" if native else "llama")
    raw = real_config([engine])
    raw["backends"][0]["native_apis"] = ["responses", "messages"] if native else []
    return engine, raw


async def test_responses_api(setup, gateway_factory, connect) -> None:
    engine, raw = setup
    gw = await gateway_factory(raw)
    before = await engine_counters(engine)
    r = await connect(gw).responses.create(model=MODEL, input=QUESTION, max_output_tokens=12, temperature=0)
    after = await engine_counters(engine)
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        after["prompt"] - before["prompt"],
        after["generated"] - before["generated"],
    ), "the usage the client sees is the engine's own count"
    if engine.kind == "vllm":  # float32 weights, greedy
        assert "Paris" in r.output_text


async def test_responses_stream(setup, gateway_factory, connect) -> None:
    engine, raw = setup
    gw = await gateway_factory(raw)
    stream = await connect(gw).responses.create(
        model=MODEL, input=QUESTION, max_output_tokens=12, temperature=0, stream=True
    )
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas.strip() and deltas == final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_messages_api(setup, gateway_factory) -> None:
    engine, raw = setup
    gw = await gateway_factory(raw)
    client = AsyncAnthropic(base_url=gw.base, api_key=KEY, max_retries=0)
    try:
        before = await engine_counters(engine)
        m = await client.messages.create(
            model=MODEL, max_tokens=12, extra_body=GREEDY, messages=[{"role": "user", "content": QUESTION}]
        )
        after = await engine_counters(engine)
        assert m.role == "assistant" and m.stop_reason in ("end_turn", "max_tokens")
        text = "".join(b.text for b in m.content if b.type == "text")
        assert text.strip()
        # Anthropic's input_tokens leave out the prompt tokens read from the engine's prompt cache
        cached = m.usage.cache_read_input_tokens or 0
        assert (m.usage.input_tokens + cached, m.usage.output_tokens) == (
            after["prompt"] - before["prompt"],
            after["generated"] - before["generated"],
        )
        async with client.messages.stream(
            model=MODEL, max_tokens=12, extra_body=GREEDY, messages=[{"role": "user", "content": QUESTION}]
        ) as s:
            streamed = "".join([t async for t in s.text_stream])
            final = await s.get_final_message()
        assert streamed.strip() and final.usage.output_tokens > 0
        if engine.kind == "vllm":
            assert "Paris" in text and streamed == text  # greedy: the same answer streamed or not
    finally:
        await client.close()
