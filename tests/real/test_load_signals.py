"""The gateway's view of a real engine's load is the engine's own /metrics: with more requests than
the engine runs at once (vLLM --max-num-seqs 2; llama.cpp 4 slots), the deployment gauges show the
engine's running and waiting counts, and both return to 0 when the clients go away."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, gateway_metric, real_config, until

# (engine, requests sent, expected running, expected waiting)
CASES = {"vllm": (5, 2, 3), "llamacpp": (6, 4, 2)}


@pytest.fixture(params=list(CASES))
def engine(request):
    return request.getfixturevalue("vllm" if request.param == "vllm" else "llama")


async def _gauges(gw, dep: str) -> tuple[float, float]:
    return (
        await gateway_metric(gw.base, "switchyard_deployment_requests_running", deployment=dep),
        await gateway_metric(gw.base, "switchyard_deployment_requests_waiting", deployment=dep),
    )


async def test_gauges_equal_the_engines_queue(engine, gateway_factory, connect, figures) -> None:
    sent, running, waiting = CASES[engine.kind]
    gw = await gateway_factory(real_config([engine]))
    client = connect(gw)
    dep = f"{engine.kind}-{engine.port}/{MODEL}"

    async def long_stream(i: int) -> None:
        s = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Story number {i}, please."}],
            max_tokens=600,
            extra_body={"ignore_eos": True},
            stream=True,
        )
        async for _ in s:
            pass

    tasks = [asyncio.create_task(long_stream(i)) for i in range(sent)]
    try:

        async def both() -> tuple[tuple[float, float], tuple[float, float]] | None:
            c = await engine_counters(engine)
            own, seen = (c["running"], c["waiting"]), await _gauges(gw, dep)
            return (own, seen) if own == seen == (running, waiting) else None

        own, seen = await until(both, timeout_s=30, every_s=0.2)
        figures[f"load_signals_{engine.kind}_engine_vs_gateway"] = {"engine": own, "gateway": seen}
        if engine.kind == "vllm":  # KV use: the gauge follows vllm:kv_cache_usage_perc
            kv = (await engine.metrics("vllm:kv_cache_usage_perc"))["vllm:kv_cache_usage_perc"]
            gauge = await gateway_metric(gw.base, "switchyard_deployment_kv_cache_usage_ratio", deployment=dep)
            assert kv > 0 and abs(gauge - kv) < 0.05
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drained() -> bool:
        c = await engine_counters(engine)
        return (c["running"], c["waiting"]) == (0, 0) and await _gauges(gw, dep) == (0, 0)

    await until(drained, timeout_s=10)
