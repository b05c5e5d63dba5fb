"""Redis mode: two gateways (separate Redis clients) on one Redis enforce one limit; a Redis killed
mid-run follows the configured fail policy and no request hangs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import sdk
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import limits_config

MSG = [{"role": "user", "content": "Hi"}]


async def test_two_gateways_on_one_redis_enforce_one_limit(engines: Any, gateway_factory: Any, prefix: str) -> None:
    # A bucket of 200 requests refilling 1 per minute: over a run shorter than a minute exactly 200
    # (+1 per started minute) pass, whichever gateway they go through.
    raw = limits_config(
        engines,
        limits={"rules": [{"scope": "team", "name": "research", "requests_per_minute": 1, "burst": 200}]},
        redis={"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3},
    )
    a, b = await gateway_factory(raw), await gateway_factory(raw)
    assert a.gateway.redis is not b.gateway.redis
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30)
    clients = [sdk(a, http_client=http), sdk(b, http_client=http)]
    sem = asyncio.Semaphore(40)

    async def one(i: int) -> bool:
        async with sem:
            try:
                await clients[i % 2].chat.completions.create(model="chat", messages=MSG, max_tokens=1)
                return True
            except openai.RateLimitError:
                return False

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(500)))
    elapsed = time.monotonic() - started
    admitted = sum(results)
    expected = 200 + elapsed / 60
    assert abs(admitted - expected) <= 0.01 * 200, (admitted, elapsed)
    # both gateways took part
    assert sum(results[0::2]) > 0 and sum(results[1::2]) > 0
    await http.aclose()


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_killed_mid_run_follows_fail_policy(
    policy: str, engines: Any, gateway_factory: Any, private_redis: Any
) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            limits={"rules": [{"scope": "key", "name": "*", "requests_per_minute": 1000}], "fail_policy": policy},
            redis={"url": private_redis.url, "timeout_s": 0.2},
        )
    )
    client = sdk(gw)
    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=1)
    assert raw.headers["x-ratelimit-remaining-requests"] == "999"
    private_redis.kill()
    for _ in range(5):
        started = time.monotonic()
        if policy == "open":  # local in-memory buckets take over
            raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=1)
            assert raw.headers["x-ratelimit-limit-requests"] == "1000"
        else:
            with pytest.raises(openai.InternalServerError) as exc:
                await client.chat.completions.create(model="chat", messages=MSG, max_tokens=1)
            assert exc.value.status_code == 503 and exc.value.code == "limits_unavailable"
        assert time.monotonic() - started < 1.0  # never hangs on the dead Redis
    metrics = gw.gateway.metrics.render().decode()
    assert "switchyard_limits_store_errors_total{op=" in metrics  # the settle or the next admission saw it
    private_redis.start()  # back: used again once the retry delay has passed
    await asyncio.sleep(1.1)
    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=1)
    assert raw.status_code == 200
