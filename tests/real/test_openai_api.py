"""The OpenAI API through Switchyard to real engines, with the official openai SDK: chat, completions,
streaming with usage (the gateway's count is the engine's), embeddings (llama.cpp), tool calls."""

from __future__ import annotations

import json

import pytest
from openai import AsyncOpenAI

from loadtest.real_engines import MODEL
from tests.conftest import to_config
from tests.real.helpers import ASK_FRANCE, engine_counters, gateway_metric, real_config


@pytest.fixture(params=["vllm", "llamacpp"])
def engine(request):
    return request.getfixturevalue("vllm" if request.param == "vllm" else "llama")


async def test_chat_answer_is_the_engines_own(engine, gateway_factory, connect) -> None:
    gw = await gateway_factory(real_config([engine]))
    args = dict(model=MODEL, messages=ASK_FRANCE, max_tokens=12, temperature=0)
    r = await connect(gw).chat.completions.create(**args)
    direct = await connect(engine).chat.completions.create(**args)
    assert r.choices[0].message.content == direct.choices[0].message.content  # greedy: the same answer
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )
    if engine.kind == "vllm":  # float32 weights; llama.cpp's Q4_1 ones answer "L'Étoile, ..."
        assert r.choices[0].message.content == "The capital of France is Paris."


async def test_completions(engine, gateway_factory, connect) -> None:
    gw = await gateway_factory(real_config([engine]))
    r = await connect(gw).completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in r.choices[0].text
    assert r.usage.prompt_tokens == 5 if engine.kind == "vllm" else r.usage.prompt_tokens > 0


@pytest.mark.parametrize("client_asks_usage", [True, False])
async def test_stream_usage_is_the_engines_count(engine, gateway_factory, connect, client_asks_usage) -> None:
    gw = await gateway_factory(real_config([engine]))
    before = await engine_counters(engine)
    extra = {"stream_options": {"include_usage": True}} if client_asks_usage else {}
    stream = await connect(gw).chat.completions.create(
        model=MODEL, messages=ASK_FRANCE, max_tokens=20, temperature=0, stream=True, **extra
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    after = await engine_counters(engine)
    engine_prompt, engine_generated = after["prompt"] - before["prompt"], after["generated"] - before["generated"]
    if client_asks_usage:
        usage = chunks[-1].usage
        assert chunks[-1].choices == []
        assert (usage.prompt_tokens, usage.completion_tokens) == (engine_prompt, engine_generated)
    else:
        assert all(c.usage is None for c in chunks), "the usage chunk the gateway asked for leaked to the client"
    # the gateway's own token counters carry the engine's figures either way
    labels = {"model": MODEL, "team": "agents"}
    assert await gateway_metric(gw.base, "switchyard_tokens_total", kind="completion", **labels) == engine_generated
    assert await gateway_metric(gw.base, "switchyard_tokens_total", kind="prompt", **labels) == engine_prompt


async def test_embeddings_from_llama_cpp(paths, gateway_factory, connect) -> None:
    from loadtest.real_engines import start_llama

    emb = start_llama(paths, "--embeddings", "--pooling", "mean", slots=1, ctx=2048)
    try:
        emb.wait_ready()
        raw = real_config([emb])
        raw["models"].append(
            {"name": "embed", "deployments": [{"backend": raw["backends"][0]["name"], "model": MODEL}]}
        )
        gw = await gateway_factory(raw)
        r = await connect(gw).embeddings.create(model="embed", input=["Paris is in France.", "Paris is in France."])
        a, b = (d.embedding for d in r.data)
        assert len(a) == 576 and a == b  # SmolLM2-135M's hidden size; same text, same vector
        assert r.usage.prompt_tokens > 0
    finally:
        emb.stop()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def _tool_call(client: AsyncOpenAI, stream: bool, **args) -> tuple[str, str, str]:
    """(name, arguments, finish_reason) of the answer's tool call."""
    if not stream:
        r = await client.chat.completions.create(**args)
        (call,) = r.choices[0].message.tool_calls
        return call.function.name, call.function.arguments, r.choices[0].finish_reason
    s = await client.chat.completions.create(stream=True, **args)
    chunks = [c async for c in s if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
    return (
        name,
        "".join(tc.function.arguments or "" for tc in calls if tc.function),
        chunks[-1].choices[0].finish_reason,
    )


@pytest.mark.parametrize("choice,stream", [("required", False), ("required", True), ("named", False)])
async def test_tool_call_passes_through_from_vllm(vllm, gateway_factory, connect, stream, choice) -> None:
    """vLLM (hermes parser) turns the model's <tool_call> into tool_calls; the gateway passes them on
    as the engine made them. SmolLM2-135M writes the arguments as "Paris" (a JSON string, not the
    {"city": ...} object the schema asks for): the engine does not enforce the parameters schema."""
    gw = await gateway_factory(real_config([vllm]))
    args = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required" if choice == "required" else {"type": "function", "function": {"name": "get_weather"}},
        max_tokens=100,
        temperature=0,
    )
    direct = await _tool_call(connect(vllm), False, **args)
    through = await _tool_call(connect(gw), stream, **args)
    assert through[:2] == direct[:2]
    assert through[0] == "get_weather" and "Paris" in json.loads(through[1])
    assert through[2] == direct[2] == ("tool_calls" if choice == "required" else "stop")


async def test_unknown_model_and_bad_request_come_back_as_openai_errors(vllm, gateway_factory, connect) -> None:
    import openai

    gw = await gateway_factory(real_config([vllm]))
    with pytest.raises(openai.BadRequestError) as e:  # vLLM's own validation, passed through
        await connect(gw).chat.completions.create(model=MODEL, messages=ASK_FRANCE, extra_body={"priority": "high"})
    assert e.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        await connect(gw).chat.completions.create(model="no-such-model", messages=ASK_FRANCE)
    assert to_config(real_config([vllm])).models[0].name == MODEL
