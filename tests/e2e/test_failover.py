"""Failover end to end: fallback aliases, a killed and restarted engine process rejoining, graceful
degradation (503 + Retry-After at once, starting with a backend down), hedging."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from loadtest.engine import EngineConfig, Fault, start_engine
from tests.conftest import sdk
from tests.e2e.test_resilience import MESSAGES, ask, breakers, config, metric

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_fallback_alias_answers_when_the_primary_is_down(engine_factory, gateway_factory) -> None:
    big, small = await engine_factory(), await engine_factory()
    raw = config([big, small], {"breaker": {"consecutive_failures": 2, "open_s": 30}})
    raw["models"] = [
        {"name": "big", "fallbacks": ["small"], "deployments": [{"backend": "e0", "model": "upstream-big"}]},
        {"name": "small", "deployments": [{"backend": "e1", "model": "upstream-small"}]},
        {"name": "chat", "deployments": [{"backend": "e0", "model": "upstream-llama"}]},
        {"name": "embed", "deployments": [{"backend": "e0", "model": "upstream-embedder"}]},
    ]
    gw = await gateway_factory(raw)
    client = sdk(gw)
    ok = await client.chat.completions.with_raw_response.create(model="big", messages=MESSAGES, max_tokens=3)
    assert ok.headers["x-switchyard-model"] == "big"
    await big.stop()  # the primary's only engine dies
    for i in range(6):
        t0 = time.monotonic()
        raw_resp = await client.chat.completions.with_raw_response.create(
            model="big", messages=MESSAGES, max_tokens=3, stream=i % 2 == 1
        )
        assert raw_resp.headers["x-switchyard-model"] == "small"
        assert raw_resp.headers["x-switchyard-deployment"] == "e1/upstream-small"
        if i % 2 == 0:
            assert raw_resp.parse().model == "upstream-small"  # the body's model as the upstream gave it
        else:
            assert [c async for c in raw_resp.parse()]
        assert time.monotonic() - t0 < 1.0
    assert await metric(gw, "switchyard_fallbacks_total", model="big", fallback="small") == 6


async def test_nothing_can_serve_gives_503_with_retry_after_at_once(engine_factory, gateway_factory) -> None:
    port = free_port()  # nothing listens here yet: the backend is down at startup
    raw = config([], {"breaker": {"consecutive_failures": 2, "open_s": 30}}, health_check_interval_s=0.1)
    raw["backends"] = [{"name": "e0", "kind": "vllm", "url": f"http://127.0.0.1:{port}/v1"}]
    raw["models"] = [{"name": "chat", "deployments": [{"backend": "e0", "model": "upstream-llama"}]}]
    gw = await gateway_factory(raw)  # starts anyway
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.base + "/health/live") as r:
            assert r.status == 200
    client = sdk(gw)
    with pytest.raises(openai.APIStatusError) as first:
        await ask(client)
    assert first.value.status_code in (502, 503)
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            await ask(client)
        assert time.monotonic() - t0 < 0.5  # at once, not a hang
        assert e.value.status_code == 503 and e.value.code == "no_deployment_available"
        assert int(e.value.response.headers["Retry-After"]) >= 1
    # The engine comes up: the health probe sees it and its breaker goes half-open; it rejoins.
    engine = await start_engine(EngineConfig(), host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await ask(client)
                break
            except openai.APIStatusError:
                assert time.monotonic() < deadline, "the recovered backend did not rejoin"
                await asyncio.sleep(0.1)
    finally:
        await engine.stop()


async def _wait_engine(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url + "/models") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "engine process did not start"
            await asyncio.sleep(0.1)


def _spawn_engine(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killed_and_restarted_engine_process_rejoins(engine_factory, gateway_factory) -> None:
    port = free_port()
    proc = _spawn_engine(port)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        await _wait_engine(url)
        steady = await engine_factory()
        raw = config(
            [steady],
            {"breaker": {"consecutive_failures": 2, "open_s": 0.5, "max_open_s": 1}},
            health_check_interval_s=0.2,
        )
        raw["backends"].append({"name": "proc", "kind": "vllm", "url": url})
        raw["models"][0]["deployments"].append({"backend": "proc", "model": "upstream-llama"})
        gw = await gateway_factory(raw)
        client = sdk(gw)
        for _ in range(10):
            assert await ask(client)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for i in range(20):  # zero client errors while it is dead
            assert await ask(client, stream=i % 2 == 0)
        assert (await breakers(gw))["proc"]["state"] in ("open", "half_open") or not (await breakers(gw))["proc"][
            "healthy"
        ]
        proc = _spawn_engine(port)  # restarted on the same port
        await _wait_engine(url)
        served = await metric(gw, "switchyard_requests_total", deployment="proc/upstream-llama", status="200")
        deadline = time.monotonic() + 10
        while (
            await metric(gw, "switchyard_requests_total", deployment="proc/upstream-llama", status="200") < served + 3
        ):
            assert await ask(client)  # still zero client errors
            assert time.monotonic() < deadline, "restarted engine did not rejoin"
            await asyncio.sleep(0.05)
        assert (await breakers(gw))["proc"]["state"] == "closed"
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_hedging_sends_a_second_copy_when_the_first_is_slow(engine_factory, gateway_factory) -> None:
    slow, fast = await engine_factory(), await engine_factory()
    raw = config([slow, fast])
    raw["models"][0]["hedge_after_s"] = 0.2
    gw = await gateway_factory(raw)
    slow.set_fault(Fault(kind="delay", delay_s=3))
    client = sdk(gw)
    for i in range(8):
        t0 = time.monotonic()
        assert await ask(client, stream=i % 2 == 0)
        assert time.monotonic() - t0 < 1.5  # never waits the 3 s of the slow engine
    assert slow.faults.fired >= 1
    assert await metric(gw, "switchyard_hedges_total", model="chat", winner="hedge") >= 1
    deadline = time.monotonic() + 3
    while slow.stats.cancelled < slow.faults.fired:  # the losing copies were cancelled upstream
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert slow.stats.completed == 0
    d = {x.name: x for x in gw.gateway.router.get("chat").deployments}
    assert d["e0/upstream-llama"].active == 0 and d["e1/upstream-llama"].active == 0


async def test_a_hung_engine_behind_hedging_still_opens_its_breaker(engine_factory, gateway_factory) -> None:
    hung, healthy = await engine_factory(), await engine_factory()
    raw = config([hung, healthy])
    raw["models"][0]["hedge_after_s"] = 0.1
    gw = await gateway_factory(raw)
    hung.set_fault(Fault(kind="hang"))
    client = sdk(gw)
    for i in range(30):  # hedging hides the hang from clients ...
        t0 = time.monotonic()
        assert await ask(client, stream=i % 2 == 0)
        assert time.monotonic() - t0 < 2
        if (await breakers(gw))["e0"]["state"] == "open":
            break
    # ... and the lost races (no first byte, twice in a row without a success) trip its breaker, so
    # requests stop paying the hedge delay on it.
    assert (await breakers(gw))["e0"]["state"] == "open", (
        f"still {(await breakers(gw))['e0']['state']} after {i + 1} requests"
    )
    before, hedges = hung.stats.requests_total, await metric(gw, "switchyard_hedges_total", model="chat")
    for _ in range(5):
        assert await ask(client)
    assert hung.stats.requests_total == before  # the open breaker keeps requests off e0 ...
    assert await metric(gw, "switchyard_hedges_total", model="chat") == hedges  # ... so none waits for a hedge
