"""Cancellation frees the engine's slot; in-flight counts follow the body, not the headers;
least-active with weights spreads held streams; one structured log line per request."""

from __future__ import annotations

import asyncio
import io
import time

import orjson

from gateway.logs import configure_logging, reset_logging
from tests.conftest import KEY_ALL, gateway_config, sdk

MESSAGES = [{"role": "user", "content": "tell me a long story"}]


async def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_client_disconnect_cancels_the_upstream_request(engine_factory, gateway_factory) -> None:
    engine = await engine_factory(itl_s=0.05, output_tokens=200)
    gw = await gateway_factory(gateway_config([engine]))
    stream = await sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=200, stream=True)
    got = 0
    async for _ in stream:
        got += 1
        if got == 3:
            break
    await stream.close()  # the agent gives up mid-answer
    await wait_for(lambda: engine.stats.cancelled == 1)
    await wait_for(lambda: engine.stats.running == 0)
    deployment = gw.gateway.router.get("chat").deployments[0]
    await wait_for(lambda: deployment.active == 0)
    assert engine.stats.completed == 0


async def test_in_flight_lasts_until_the_stream_body_ends(engine_factory, gateway_factory) -> None:
    engine = await engine_factory(itl_s=0.03, output_tokens=20)
    gw = await gateway_factory(gateway_config([engine]))
    deployment = gw.gateway.router.get("chat").deployments[0]
    stream = await sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=20, stream=True)
    seen_active = []
    async for _ in stream:
        seen_active.append(deployment.active)
    assert max(seen_active) == 1  # headers arrived long before these chunks; still counted
    await wait_for(lambda: deployment.active == 0)


async def test_least_active_with_weights_spreads_held_streams(engine_factory, gateway_factory) -> None:
    slow = [await engine_factory(itl_s=0.05, output_tokens=100) for _ in range(2)]
    raw = gateway_config(slow)
    raw["models"][0]["deployments"][0]["weight"] = 3
    gw = await gateway_factory(raw)
    client = sdk(gw)
    streams = [
        await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=100, stream=True)
        for _ in range(8)
    ]
    assert [e.stats.running + e.stats.waiting for e in slow] == [6, 2]
    for s in streams:
        await s.close()


async def test_equal_weights_share_load(engine_factory, gateway_factory) -> None:
    slow = [await engine_factory(itl_s=0.05, output_tokens=100) for _ in range(2)]
    gw = await gateway_factory(gateway_config(slow))
    client = sdk(gw)
    streams = [
        await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=100, stream=True)
        for _ in range(6)
    ]
    assert [e.stats.requests_total for e in slow] == [3, 3]
    for s in streams:
        await s.close()


async def test_one_structured_log_line_per_request_without_secrets(gateway_factory, engines) -> None:
    out = io.BytesIO()
    # logging is configured before the gateway exists, as `switchyard serve` does: structlog binds a
    # logger to the configuration in force at its first use (an earlier test's, on a shared worker)
    writer = configure_logging("info", "json", out=out)
    try:
        gateway = await gateway_factory(gateway_config(engines))
        await sdk(gateway).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3)
        # the line is written after the answer (the settle task, then the log thread): wait for it
        # rather than for a fixed time, which a loaded machine can outlast
        deadline = time.monotonic() + 10
        while b'"event":"request"' not in out.getvalue() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # and long enough for a second line to show, were there one
    finally:
        writer.close()
        reset_logging()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["key"] == "research-agents" and line["team"] == "research" and line["model"] == "chat"
    assert line["status"] == 200 and line["completion_tokens"] == 3 and line["prompt_tokens"] > 0
    assert line["deployment"].endswith("/upstream-llama") and line["latency_ms"] > 0 and line["ttft_ms"] > 0
    assert len(line["request_id"]) == 32
    assert KEY_ALL not in out.getvalue().decode()
