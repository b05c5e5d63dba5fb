"""A client that goes away stops the generation on the real engine: the engine's own running count
returns to 0 and its generated-token counter stops, long before the answer would have ended."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, gateway_metrics, real_config, until

LONG = dict(
    model=MODEL,
    messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}],
    max_tokens=1500,
    temperature=0,
    extra_body={"ignore_eos": True},  # both engines accept it: the answer would run to max_tokens
)


@pytest.fixture(params=["vllm", "llamacpp"])
def engine(request):
    return request.getfixturevalue("vllm" if request.param == "vllm" else "llama")


async def _stopped(engine, before: dict[str, float]) -> float:
    """Wait for the engine to run nothing, check generation stays stopped; tokens generated."""
    await until(lambda: _idle(engine), timeout_s=3.0)
    counted = (await engine_counters(engine))["generated"]
    await asyncio.sleep(1.0)
    assert (await engine_counters(engine))["generated"] == counted, "the engine kept generating"
    return counted - before["generated"]


async def _idle(engine) -> bool:
    c = await engine_counters(engine)
    return c["running"] == 0 and c["waiting"] == 0


async def test_closing_a_stream_stops_generation(engine, gateway_factory, connect, figures) -> None:
    gw = await gateway_factory(real_config([engine]))
    before = await engine_counters(engine)
    stream = await connect(gw).chat.completions.create(stream=True, **LONG)
    received = 0
    async for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 5:
            break
    assert (await engine_counters(engine))["running"] == 1
    await stream.close()
    generated = await _stopped(engine, before)
    assert generated < 300  # of 1500: stopped at once (~17-45 tokens/s on this machine)
    figures[f"disconnect_{engine.kind}_tokens_generated_of_1500"] = generated


async def test_client_timeout_on_a_non_streamed_request_stops_generation(vllm, gateway_factory, connect) -> None:
    gw = await gateway_factory(real_config([vllm]))
    before = await engine_counters(vllm)
    client = connect(gw).with_options(timeout=httpx.Timeout(2.0))
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(**LONG)
    # First the gateway: it drops the connection of the client that left and the request with it
    # (the scrape's own connection is the one left open), then the engine stops generating.
    try:
        await until(lambda: _gateway_let_go(gw), timeout_s=3.0)
    except AssertionError:
        seen = await gateway_metrics(gw.base, *GATEWAY_HOLDS)
        raise AssertionError(f"3 s after the client left, the gateway still holds it: {seen}") from None
    assert await _stopped(vllm, before) < 200


GATEWAY_HOLDS = ("switchyard_client_connections", "switchyard_deployment_in_flight")


async def _gateway_let_go(gw) -> bool:
    m = await gateway_metrics(gw.base, *GATEWAY_HOLDS)
    return m["switchyard_client_connections"] == 1 and m["switchyard_deployment_in_flight"] == 0
