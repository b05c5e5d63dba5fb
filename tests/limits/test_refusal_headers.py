"""Every 429 of the limits phase carries OpenAI's x-ratelimit-* headers (the tightest requests and
tokens buckets), whichever check refused it (bucket, concurrency, budget) and whichever store
(in memory, Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.conftest import KEY_CHAT, sdk
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import limits_config

MSG = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_concurrency_and_budget_refusals_carry_ratelimit_headers(
    backend: str, engine_factory: Any, gateway_factory: Any, prefix: str, tmp_path: Any
) -> None:
    slow = await engine_factory(ttft_s=1.0)
    extra = {"redis": {"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3}} if backend == "redis" else {}
    gw = await gateway_factory(
        limits_config(
            [slow],
            limits={
                "rules": [{"scope": "key", "name": "*", "requests_per_minute": 100, "tokens_per_minute": 100000}]
                + [{"scope": "team", "name": "ops", "concurrent": 1}]
            },
            prices={"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}},
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [{"scope": "team", "name": "research", "hard_usd": 0.001}],
            },
            **extra,
        )
    )
    ops = sdk(gw, KEY_CHAT)
    first = asyncio.create_task(ops.chat.completions.create(model="chat", messages=MSG, max_tokens=3))
    await asyncio.sleep(0.4)
    with pytest.raises(openai.RateLimitError) as exc:  # the one concurrent slot is taken
        await ops.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    headers = exc.value.response.headers
    assert "concurrent requests" in exc.value.message
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert "x-ratelimit-reset-requests" in headers and "x-ratelimit-remaining-tokens" in headers
    await first
    with pytest.raises(openai.RateLimitError) as exc:  # 20 tokens x $0.001 > $0.001
        await sdk(gw).chat.completions.create(model="chat", messages=MSG, max_tokens=20)
    assert exc.value.code == "budget_exceeded"
    headers = exc.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-remaining-requests"] == "100"  # the refused request took nothing
    assert "x-ratelimit-reset-tokens" in headers
