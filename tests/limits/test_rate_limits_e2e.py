"""Rate limits seen through the openai SDK: headers on every response, RateLimitError with
Retry-After and x-ratelimit-* when over, token and concurrency limits, the context window check."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.conftest import KEY_ALL, KEY_CHAT, sdk
from tests.limits.helpers import limits_config

MSG = [{"role": "user", "content": "Hello there"}]


async def test_requests_per_minute_headers_and_rate_limit_error(engines: Any, gateway_factory: Any) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            limits={"rules": [{"scope": "key", "name": "*", "requests_per_minute": 3, "tokens_per_minute": 100000}]},
        )
    )
    client = sdk(gw)
    remaining = []
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=5)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100000
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)
    err = exc.value
    assert err.code == "rate_limit_exceeded"
    assert int(err.response.headers["retry-after"]) >= 1
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in err.response.headers
    # each key has its own bucket ("*"): the other key is not limited
    assert (await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=5)).choices
    metrics = gw.gateway.metrics.render().decode()
    assert 'switchyard_rate_limited_total{scope="key",team="research"} 1.0' in metrics


async def test_tokens_per_minute_reserves_prompt_and_max_tokens(engine_factory: Any, gateway_factory: Any) -> None:
    slow = await engine_factory(ttft_s=0.5)
    gw = await gateway_factory(
        limits_config([slow], limits={"rules": [{"scope": "team", "name": "research", "tokens_per_minute": 1000}]})
    )
    client = sdk(gw)
    first = asyncio.create_task(client.chat.completions.create(model="chat", messages=MSG, max_tokens=600))
    await asyncio.sleep(0.2)
    with pytest.raises(openai.RateLimitError) as exc:  # 600 + prompt still reserved by the first one
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=600)
    assert exc.value.response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert "tokens per minute on team `research`" in exc.value.message
    # the ops team is not covered by the rule
    assert (await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=600)).choices
    await first


async def test_settle_refunds_unused_tokens(engines: Any, gateway_factory: Any) -> None:
    gw = await gateway_factory(
        limits_config(engines, limits={"rules": [{"scope": "key", "name": "*", "tokens_per_minute": 1000}]})
    )
    client = sdk(gw)
    for _ in range(5):  # each reserves ~610 tokens, uses ~30: only possible because settles refund
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=600)
        await asyncio.sleep(0.05)


async def test_concurrency_limit(engine_factory: Any, gateway_factory: Any) -> None:
    slow = await engine_factory(ttft_s=1.0)
    gw = await gateway_factory(
        limits_config([slow], limits={"rules": [{"scope": "model", "name": "chat", "concurrent": 1}]})
    )
    client = sdk(gw)
    first = asyncio.create_task(client.chat.completions.create(model="chat", messages=MSG, max_tokens=3))
    await asyncio.sleep(0.3)
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    assert "concurrent requests on model `chat`" in exc.value.message
    await first
    await asyncio.sleep(0.05)
    assert (await client.chat.completions.create(model="chat", messages=MSG, max_tokens=3)).choices


async def test_context_window_rejected_before_any_upstream_call(engines: Any, gateway_factory: Any) -> None:
    gw = await gateway_factory(limits_config(engines, prices={"chat": {"input_per_mtok": 1, "context_window": 100}}))
    before = sum(e.stats.requests_total for e in engines)
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk(gw).chat.completions.create(model="chat", messages=[{"role": "user", "content": "word " * 200}])
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # prompt fits, prompt + max_tokens does not
        await sdk(gw).chat.completions.create(model="chat", messages=MSG, max_tokens=95)
    assert sum(e.stats.requests_total for e in engines) == before
    assert (await sdk(gw).chat.completions.create(model="chat", messages=MSG, max_tokens=20)).choices


async def test_no_limits_configured_means_no_ratelimit_headers(gateway: Any) -> None:
    raw = await sdk(gateway, KEY_ALL).chat.completions.with_raw_response.create(
        model="chat", messages=MSG, max_tokens=3
    )
    assert "x-ratelimit-limit-requests" not in raw.headers
