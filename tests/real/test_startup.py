"""Health and readiness follow a real engine's start-up: a gateway started before its engine answers
/health/ready 503 (and routes nothing) until the engine serves, then 200; a killed engine takes the
model back to not ready. Runs first (conftest orders it) so it sees the session's vLLM boot."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from loadtest.real_engines import MODEL, attach, free_port, start_llama
from tests.real.helpers import real_config, until


async def _ready(gw) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(gw.base + "/health/ready") as r:
        return r.status, await r.json()


async def _is_ready(gw) -> bool:
    return (await _ready(gw))[0] == 200


async def test_readiness_follows_llama_cpp_start_and_crash(paths, gateway_factory, connect) -> None:
    port = free_port()
    gw = await gateway_factory(real_config([attach("llamacpp", port)]))  # nothing listens there yet
    await asyncio.sleep(0.5)  # a few probe rounds
    assert await _ready(gw) == (503, {"status": "not_ready", "models": {MODEL: False}})
    async with aiohttp.ClientSession() as s, s.get(gw.base + "/health/live") as r:
        assert r.status == 200  # alive all along: only readiness waits for the engine
    engine = start_llama(paths, slots=1, port=port)
    try:
        engine.wait_ready()
        await until(lambda: _is_ready(gw), timeout_s=5)
        r = await connect(gw).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert r.choices[0].message.content
        engine.kill()
        await until(lambda: _not_ready(gw), timeout_s=5)
    finally:
        engine.stop()


async def test_readiness_follows_vllm_boot(vllm_booting, gateway_factory) -> None:
    """vLLM takes ~30-60 s to load here; the gateway is not ready until it serves, then ready within
    a probe interval or two of vLLM's own /health turning 200."""
    if vllm_booting.attached:
        pytest.skip("SWITCHYARD_REAL_VLLM_PORT: an already running vLLM has no boot to watch")
    gw = await gateway_factory(real_config([vllm_booting]))
    assert vllm_booting.health() != 200, "vLLM was up before the test could watch it boot"
    not_ready_seen = 0
    while vllm_booting.health() != 200:
        assert (await _ready(gw))[0] == 503
        not_ready_seen += 1
        assert vllm_booting.alive(), vllm_booting.log_tail()
        assert time.monotonic() - vllm_booting.started_at < vllm_booting.startup_s, "vLLM did not start"
        await asyncio.sleep(0.5)
    up = time.monotonic()
    await until(lambda: _is_ready(gw), timeout_s=5)
    assert not_ready_seen >= 3 and time.monotonic() - up < 5


async def _not_ready(gw) -> bool:
    return (await _ready(gw))[0] == 503
