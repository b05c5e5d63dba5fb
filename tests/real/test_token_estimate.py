"""The gateway's token estimate (tiktoken cl100k_base + OpenAI's per-message overhead) against the
engine's own prompt_tokens (SmolLM2's tokenizer and ChatML template, which adds a default system
prompt when none is given). The error is reported; what must hold whatever it is: spend and token
accounting settle to the engine's count, and the context-window check never refuses a request the
engine would serve (the estimate runs low, so the engine's own check has the last word)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import pytest

from gateway.limits import estimate
from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, real_config

REPO = Path(__file__).resolve().parents[2]


def prose(sentences: int) -> str:
    """Plain English, the same every run."""
    return " ".join(
        f"The freight train number {i} left the northern yard at {i % 12 + 1} o'clock with {20 + i % 30} wagons "
        f"of grain, and the dispatcher wrote the delay in the evening report."
        for i in range(sentences)
    )


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
CASES = {
    "short question": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
    "system + question": {
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]
    },
    "English prose, ~950 tokens": {"messages": [{"role": "user", "content": prose(25)}]},
    "Python code, ~900 tokens": {
        "messages": [{"role": "user", "content": (REPO / "gateway/limits/estimate.py").read_text()[:3000]}]
    },
    "multi-turn, 6 messages": {
        "messages": [{"role": "system", "content": "You help."}]
        + [
            {"role": r, "content": f"message {i} about wagons"}
            for i, r in enumerate(["user", "assistant"] * 2 + ["user"])
        ]
    },
    "French + Japanese": {
        "messages": [
            {"role": "user", "content": "Quelle est la capitale de la France ? Racontez Paris. 東京は日本の首都です。"}
        ]
    },
    "tools (not rendered by SmolLM2's template)": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "tool_choice": "none",
    },
}


@pytest.fixture(scope="module")
def count() -> estimate.Counter:
    counters = estimate.load_counters({"cl100k_base"})
    assert "cl100k_base" in counters, "tiktoken's cl100k_base is not available offline (install the [limits] extra)"
    return counters["cl100k_base"]


async def test_estimate_error_against_the_engines_prompt_tokens(vllm, connect, count, figures) -> None:
    client = connect(vllm)
    errors = {}
    for name, body in CASES.items():
        r = await client.chat.completions.create(model=MODEL, max_tokens=1, **body)
        est = estimate.prompt_tokens("chat", body, count)
        errors[name] = {
            "estimate": est,
            "engine": r.usage.prompt_tokens,
            "error": round(est / r.usage.prompt_tokens - 1, 3),
        }
    figures["token_estimate_vs_vllm_prompt_tokens"] = errors
    # cl100k_base's larger vocabulary and the template the estimate does not see: low, within a factor 3
    assert all(1 / 3 < e["estimate"] / e["engine"] < 3 for e in errors.values()), errors
    text = [e for n, e in errors.items() if "prose" in n or "code" in n]
    assert all(-0.3 < e["error"] < 0 for e in text), errors  # long text: 15-20 % low


async def test_spend_and_tokens_settle_to_the_engines_count(vllm, gateway_factory, connect, tmp_path) -> None:
    raw = real_config(
        [vllm],
        prices={MODEL: {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        budgets={
            "rules": [{"scope": "team", "name": "agents", "period": "none"}],
            "sqlite_path": str(tmp_path / "l.db"),
        },
        limits={"rules": [{"scope": "team", "name": "agents", "tokens_per_minute": 1_000_000}]},
    )
    gw = await gateway_factory(raw)
    client = connect(gw)
    before = await engine_counters(vllm)
    for body in CASES.values():
        await client.chat.completions.create(model=MODEL, max_tokens=8, **body)
    s = await client.chat.completions.create(model=MODEL, max_tokens=8, stream=True, **CASES["short question"])
    async for _ in s:  # streamed, the client asked no usage: the gateway still counts the engine's
        pass
    after = await engine_counters(vllm)
    usage = (await client.get("/switchyard/usage", cast_to=object, options={"params": {"team": "agents"}}))["by_model"][
        MODEL
    ]
    assert usage["prompt_tokens"] == after["prompt"] - before["prompt"]
    assert usage["completion_tokens"] == after["generated"] - before["generated"]
    assert usage["requests"] == len(CASES) + 1


async def _engine_tokens(vllm, body: dict) -> int:
    async with aiohttp.ClientSession() as s, s.post(vllm.base + "/tokenize", json={"model": MODEL, **body}) as r:
        return (await r.json())["count"]


async def test_context_window_check_leaves_the_last_word_to_the_engine(vllm, gateway_factory, connect, count) -> None:
    """vLLM runs with --max-model-len 2048; the same window in the gateway's price table. A prompt
    that fits is served; one past the window is let through by the (low) estimate and refused by vLLM."""
    gw = await gateway_factory(real_config([vllm], prices={MODEL: {"context_window": 2048}}))
    client = connect(gw)
    sizes = {}
    for n in range(40, 90):
        body = {"messages": [{"role": "user", "content": prose(n)}]}
        sizes[n] = (body, await _engine_tokens(vllm, body))
        if sizes[n][1] > 2100:
            break
    fits = max((b for b, t in sizes.values() if t + 40 <= 2048), key=lambda b: len(b["messages"][0]["content"]))
    too_long = next(b for b, t in sizes.values() if t > 2048)
    r = await client.chat.completions.create(model=MODEL, max_tokens=40, **fits)
    assert 2048 - 100 < r.usage.prompt_tokens + 40 <= 2048
    assert estimate.prompt_tokens("chat", too_long, count) + 40 < 2048  # the gateway lets it through ...
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(model=MODEL, max_tokens=40, **too_long)
    assert "maximum context length is 2048 tokens" in e.value.message  # ... vLLM refuses it
