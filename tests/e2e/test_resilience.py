"""Resilience against the simulated engine with faults injected, driven by the openai SDK:
breakers, retries, Retry-After, the retry budget, time-to-first-byte and idle timeouts, broken
streams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest

from gateway.keys import hash_key
from loadtest.engine import Fault
from tests.conftest import gateway_config, sdk

MESSAGES = [{"role": "user", "content": "hi"}]
ADMIN = "sk-admin-resilience"


def config(engines: list, resilience: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    raw = gateway_config(engines, admin_key_sha256=hash_key(ADMIN), **server)
    raw["resilience"] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, **(resilience or {})}
    return raw


async def ask(client: openai.AsyncOpenAI, stream: bool = False, **kw: Any) -> str:
    if not stream:
        r = await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=4, **kw)
        return r.choices[0].message.content or ""
    s = await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=4, stream=True, **kw)
    return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])


async def breakers(gw) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.base + "/admin/breakers", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
            rows = (await r.json())["deployments"]
            return {d["backend"]: d for d in rows if d["deployment"].endswith("/upstream-llama")}


async def metric(gw, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.base + "/metrics") as r:
            text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_500s_open_the_breaker_traffic_moves_and_it_recovers_half_open(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(), await engine_factory()
    gw = await gateway_factory(
        config(
            [e0, e1],
            {
                "breaker": {
                    "consecutive_failures": 3,
                    "min_calls": 100,
                    "open_s": 0.4,
                    "max_open_s": 0.8,
                    "half_open_successes": 2,
                }
            },
        )
    )
    client = sdk(gw)
    e1.set_fault(Fault(kind="status", status=500))
    answers = [await ask(client, stream=i % 2 == 0) for i in range(30)]  # zero client errors
    assert all(answers)
    state = await breakers(gw)
    assert state["e1"]["state"] in ("open", "half_open") and state["e1"]["trips"] >= 1
    assert state["e0"]["state"] == "closed"
    assert e1.stats.requests_total <= 8  # 3 to trip it, then a few half-open probes, not 15
    assert e0.stats.completed == 30
    assert (
        await metric(gw, "switchyard_breaker_transitions_total", deployment="e1/upstream-llama", to_state="open") >= 1
    )
    assert await metric(gw, "switchyard_retries_total", reason="status_500") >= 3
    assert await metric(gw, "switchyard_breaker_rejections_total", deployment="e1/upstream-llama") >= 1

    e1.clear_fault()  # the engine recovers: a half-open probe lets it back in
    deadline = time.monotonic() + 8
    while (await breakers(gw))["e1"]["state"] != "closed":
        assert time.monotonic() < deadline, "breaker did not close after the engine recovered"
        assert await ask(client)
        await asyncio.sleep(0.05)
    before = e1.stats.completed
    for _ in range(20):
        assert await ask(client)
    assert e1.stats.completed > before  # takes traffic again
    assert await metric(gw, "switchyard_breaker_state", deployment="e1/upstream-llama") == 0


async def test_429_retry_after_is_honoured_on_the_only_deployment(engine_factory, gateway_factory) -> None:
    e0 = await engine_factory()
    # consecutive_failures=1: a 429 must not trip the breaker, only cool the deployment down.
    gw = await gateway_factory(config([e0], {"breaker": {"consecutive_failures": 1}}))
    e0.set_fault(Fault(kind="status", status=429, retry_after=1, count=1))
    t0 = time.monotonic()
    assert await ask(sdk(gw))
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3.0, elapsed  # waited out Retry-After: 1, then retried
    assert e0.stats.requests_total == 2
    assert (await breakers(gw))["e0"]["state"] == "closed"


async def test_429_cools_one_deployment_down_while_the_other_serves(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(), await engine_factory()
    gw = await gateway_factory(config([e0, e1]))
    client = sdk(gw)
    e0.set_fault(Fault(kind="status", status=429, retry_after=1.5, count=1))
    t0 = time.monotonic()
    while e0.faults.fired == 0:  # until a request lands on e0 and gets its 429
        assert await ask(client)
    assert time.monotonic() - t0 < 1.0  # retried on e1 at once, not after Retry-After
    hits = e0.stats.requests_total
    for _ in range(10):
        assert await ask(client)
    assert e0.stats.requests_total == hits  # cooling down: no traffic
    assert 1.0 < (await breakers(gw))["e0"]["cool_down_s"] <= 1.5
    await asyncio.sleep(1.6)
    for _ in range(16):
        assert await ask(client)
    assert e0.stats.requests_total > hits  # back after Retry-After


async def test_hang_hits_the_ttfb_timeout_and_is_retried_elsewhere(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(), await engine_factory()
    raw = config([e0, e1])
    raw["models"][0]["ttfb_s"] = 0.3  # per-model time to first byte (backends keep 600 s)
    gw = await gateway_factory(raw)
    client = sdk(gw)
    e0.set_fault(Fault(kind="hang"))
    for i in range(12):
        t0 = time.monotonic()
        assert await ask(client, stream=i % 2 == 0)
        assert time.monotonic() - t0 < 2.5
    assert e0.faults.fired >= 1 and e1.stats.completed == 12
    assert await metric(gw, "switchyard_upstream_errors_total", deployment="e0/upstream-llama", kind="timeout") >= 1


async def test_timeouts_are_clear_504s(engine_factory, gateway_factory) -> None:
    e0 = await engine_factory(itl_s=0.4, output_tokens=8)
    raw = config([e0], {"max_attempts": 1})
    raw["backends"][0]["timeouts"] = {"connect_s": 1, "ttfb_s": 0.3, "idle_s": 0.15}
    gw = await gateway_factory(raw)
    client = sdk(gw)
    e0.set_fault(Fault(kind="hang", count=1))
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        await ask(client)
    assert e.value.status_code == 504 and e.value.code == "upstream_timeout"
    assert "first byte" in e.value.message and time.monotonic() - t0 < 2
    # a stream whose headers come at once (as vLLM sends them) but whose first token is late
    slow_prefill = await engine_factory(ttft_s=3)
    raw3 = config([slow_prefill], {"max_attempts": 1})
    raw3["models"][0]["ttfb_s"] = 0.3
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e3:
        await ask(sdk(await gateway_factory(raw3)), stream=True)
    assert e3.value.status_code == 504 and "first byte" in e3.value.message and time.monotonic() - t0 < 2
    # idle gap between stream chunks: the stream started, then stalls longer than idle_s
    raw2 = config([e0], {"max_attempts": 1})
    raw2["backends"][0]["timeouts"] = {"ttfb_s": 5, "idle_s": 0.15}
    stream = await sdk(await gateway_factory(raw2)).chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=8, stream=True
    )
    with pytest.raises(openai.APIError) as e2:
        async for _ in stream:
            pass
    assert "idle" in str(e2.value)


async def test_drop_mid_stream_is_not_retried_and_the_client_sees_an_error(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(output_tokens=10), await engine_factory(output_tokens=10)
    gw = await gateway_factory(config([e0, e1]))
    for e in (e0, e1):
        e.set_fault(Fault(kind="drop", after_chunks=3))
    stream = await sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=10, stream=True)
    got = 0
    with pytest.raises(openai.APIError) as e:
        async for _ in stream:
            got += 1
    assert got >= 1 and "broke" in str(e.value)
    assert e0.stats.requests_total + e1.stats.requests_total == 1  # never retried after the first byte
    assert await metric(gw, "switchyard_broken_streams_total") == 1


async def test_retry_budget_stops_amplification_when_everything_fails(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(), await engine_factory()
    gw = await gateway_factory(
        config(
            [e0, e1], {"breaker": {"enabled": False}, "budget_ratio": 0.2, "budget_min_retries": 0, "max_attempts": 3}
        )
    )
    for e in (e0, e1):
        e.set_fault(Fault(kind="status", status=500))
    client = sdk(gw)
    errors = 0
    for _ in range(50):
        try:
            await ask(client)
        except openai.InternalServerError:
            errors += 1
    upstream = e0.stats.requests_total + e1.stats.requests_total
    assert errors == 50
    assert 55 <= upstream <= 60, upstream  # 20% budget: not 150 (3 attempts each)
    assert await metric(gw, "switchyard_retry_budget_exhausted_total", model="chat") >= 30


async def test_a_client_4xx_is_passed_through_never_retried_and_never_trips_a_breaker(
    engine_factory, gateway_factory
) -> None:
    e0 = await engine_factory(max_model_len=64)
    gw = await gateway_factory(config([e0], {"breaker": {"consecutive_failures": 1}}))
    client = sdk(gw)
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):  # the engine's own 400: prompt + answer too long
            await ask(client, max_completion_tokens=None, extra_body={"max_tokens": 500})
    assert e0.stats.requests_total == 3  # not retried
    assert (await breakers(gw))["e0"]["state"] == "closed"
    assert await ask(client)


async def test_a_non_streamed_body_cut_half_way_is_retried(engine_factory, gateway_factory) -> None:
    e0, e1 = await engine_factory(), await engine_factory()
    gw = await gateway_factory(config([e0, e1]))
    client = sdk(gw)
    e0.set_fault(Fault(kind="drop"))
    for _ in range(10):
        assert await ask(client)  # nothing had reached the client yet: retried elsewhere
    assert e0.faults.fired >= 1
