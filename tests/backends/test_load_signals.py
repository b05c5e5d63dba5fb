"""Engine load signals: each simulated engine profile's /metrics scraped through a real gateway and
re-exported as per-deployment gauges; stale readings count as busy; engines without metrics use the
gateway's in-flight count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.load_signals import FLAVOURS, Load, LoadSignal, load_from_text
from tests.conftest import gateway_config, sdk
from tests.e2e.test_resilience import metric

BUSY = {"max_num_seqs": 1, "itl_s": 0.03, "output_tokens": 40}  # one at a time, ~1.2 s each


def test_vllm_text_with_the_older_kv_name_and_two_engines() -> None:
    text = (
        "# HELP vllm:num_requests_waiting x\n# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 1.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 4.0\n'
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        'vllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.5\n'
    )
    assert load_from_text(text, FLAVOURS["vllm"]) == Load(3.0, 4.0, 0.5, False, "metrics")
    assert load_from_text("other_metric 1\n", FLAVOURS["vllm"]) is None


def test_stale_reading_counts_as_busy_and_asks_for_a_scrape() -> None:
    now, asked = [0.0], list[LoadSignal]()
    signal = LoadSignal(FLAVOURS["tgi"], "http://x/metrics", 2.0, refresh=asked.append, clock=lambda: now[0])
    assert signal.current(0).stale and asked == [signal]  # never read yet
    signal.update(Load(0, 3, None, False, "metrics"), in_flight=3)
    assert signal.current(3).requests == 3
    assert signal.current(5).requests == 5  # two more sent since the reading
    now[0] = 2.5
    load = signal.current(3)
    assert load.stale and load.requests == float("inf") and len(asked) == 2


def test_requests_sent_while_the_engine_queues_add_to_its_waiting() -> None:
    signal = LoadSignal(FLAVOURS["vllm"], "http://x/metrics", 2.0)
    signal.update(Load(2, 8, 0.9, False, "metrics"), in_flight=10)
    assert signal.current(13).waiting == 5


async def _streams(client: Any, model: str, n: int) -> list[asyncio.Task[Any]]:
    async def one() -> None:
        s = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
        async for _ in s:
            pass

    return [asyncio.create_task(one()) for _ in range(n)]


@pytest.mark.parametrize(
    "profile,legacy", [("vllm", False), ("vllm", True), ("sglang", False), ("tgi", False), ("llamacpp", False)]
)
async def test_each_engine_kind_load_reaches_the_gateway_gauges(
    engine_factory, gateway_factory, profile, legacy
) -> None:
    engine = await engine_factory(profile=profile, legacy_kv_metric=legacy, **BUSY)
    raw = gateway_config([engine])
    raw["backends"][0]["kind"] = profile
    raw["load_signals"] = {"interval_s": 0.05, "stale_after_s": 0.5}
    gw = await gateway_factory(raw)
    tasks = await _streams(sdk(gw), "chat", 3)
    dep = "e0/upstream-llama"
    for _ in range(100):
        await asyncio.sleep(0.05)
        waiting = await metric(gw, "switchyard_deployment_requests_waiting", deployment=dep)
        running = await metric(gw, "switchyard_deployment_requests_running", deployment=dep)
        if waiting == 2 and running == 1:
            break
    else:
        pytest.fail(f"gauges never showed the engine's queue: waiting={waiting} running={running}")
    if profile != "tgi":
        assert await metric(gw, "switchyard_deployment_kv_cache_usage_ratio", deployment=dep) > 0
    assert await metric(gw, "switchyard_deployment_load_stale", deployment=dep) == 0
    await asyncio.gather(*tasks)


async def test_engine_without_metrics_uses_the_in_flight_count(engine_factory, gateway_factory) -> None:
    engine = await engine_factory(profile="plain", **BUSY)
    raw = gateway_config([engine])
    raw["backends"][0]["kind"] = "candle"
    raw["load_signals"] = {"interval_s": 0.05, "stale_after_s": 0.5}
    gw = await gateway_factory(raw)
    tasks = await _streams(sdk(gw), "chat", 3)
    d = gw.gateway.router.get("chat").deployments[0]
    for _ in range(50):
        await asyncio.sleep(0.05)
        if await metric(gw, "switchyard_deployment_requests_running", deployment="e0/upstream-llama") == 3:
            break
    else:
        pytest.fail("the running gauge never showed the 3 requests in flight")
    assert d.load() == Load(0.0, 3.0)
    await asyncio.gather(*tasks)


async def test_a_vllm_whose_metrics_answer_404_falls_back_to_in_flight(engine_factory, gateway_factory) -> None:
    engine = await engine_factory(profile="plain")  # no /metrics: 404
    raw = gateway_config([engine])  # but configured as vllm
    gw = await gateway_factory(raw)
    d = gw.gateway.router.get("chat").deployments[0]
    assert d.load() == Load(0.0, 0.0)
    assert not d.load().stale


async def test_an_unreachable_engine_goes_stale_and_busy(engine_factory, gateway_factory) -> None:
    engine = await engine_factory()
    raw = gateway_config([engine])
    raw["load_signals"] = {"interval_s": 0.05, "stale_after_s": 0.2}
    gw = await gateway_factory(raw)
    d = gw.gateway.router.get("chat").deployments[0]
    assert not d.load().stale
    await engine.stop()
    await asyncio.sleep(0.5)
    assert d.load().stale and d.load().requests == float("inf")
    assert await metric(gw, "switchyard_deployment_load_stale", deployment="e0/upstream-llama") == 1
