"""Budgets end to end: worst-case reservation under 200 parallel streams (memory and Redis), hard
refusal before any upstream call, usage report, durable spend across a restart, soft alert webhook."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import KEY_ALL, KEY_CHAT, sdk
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import limits_config, settled, usage

MSG = [{"role": "user", "content": "Hello there"}]
# Output only, $1000 per million tokens = $0.001 per token; prompts are free so the bound is exact.
PRICES = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_parallel_streams_never_overspend_the_hard_budget(
    backend: str, engine_factory: Any, gateway_factory: Any, prefix: str, tmp_path: Any
) -> None:
    engine = await engine_factory(ttft_s=3.0, output_tokens=16, max_num_seqs=512)
    extra = {"redis": {"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3}} if backend == "redis" else {}
    gw = await gateway_factory(
        limits_config(
            [engine],
            prices=PRICES,
            **extra,
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 1.0}],
            },
        )
    )
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=300), timeout=30)
    client = sdk(gw, http_client=http)

    async def one() -> str:
        try:
            stream = await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20, stream=True)
            async for _ in stream:
                pass
            return "ok"
        except openai.RateLimitError as e:
            return str(e.code)

    results = await asyncio.gather(*(one() for _ in range(200)))
    await settled(gw)
    # Each request reserves 20 tokens x $0.001 = $0.02; $1.00 / $0.02 = 50 fit in flight at once.
    # All 200 arrive while the first ones wait for their first token (3 s): exactly 50 pass.
    assert results.count("ok") == 50
    assert results.count("budget_exceeded") == 150
    report = (await usage(gw, team="research")).json()
    assert report["spend_usd"] == pytest.approx(50 * 16 * 0.001)  # settled to the real 16 tokens each
    assert report["spend_usd"] <= 1.0 and report["reserved_usd"] == 0
    assert report["by_model"]["chat"]["requests"] == 50
    await http.aclose()


async def test_hard_budget_refuses_before_any_upstream_call(engines: Any, gateway_factory: Any, tmp_path: Any) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            prices=PRICES,
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [{"scope": "key", "name": "ops-bot", "period": "daily", "hard_usd": 0.05}],
            },
        )
    )
    client = sdk(gw, KEY_CHAT)
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)  # reserves 0.02, spends 0.016
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)
    await settled(gw)
    before = sum(e.stats.requests_total for e in engines)
    with pytest.raises(openai.RateLimitError) as exc:  # 0.032 + 0.02 > 0.05
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)
    assert exc.value.code == "budget_exceeded"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 86400  # until the next midnight
    assert sum(e.stats.requests_total for e in engines) == before
    assert (await client.chat.completions.create(model="chat", messages=MSG, max_tokens=10)).choices  # 0.01 fits
    # the other team's key is not covered
    assert (await sdk(gw, KEY_ALL).chat.completions.create(model="chat", messages=MSG, max_tokens=20)).choices
    metrics = gw.gateway.metrics.render().decode()
    assert 'switchyard_budget_refused_total{team="ops"} 1.0' in metrics
    assert 'switchyard_spend_usd_total{model="chat",team="ops"}' in metrics


async def test_usage_endpoint_permissions_and_report(engines: Any, gateway_factory: Any, tmp_path: Any) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            prices=PRICES,
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [{"scope": "team", "name": "*", "period": "monthly", "soft_usd": 5, "hard_usd": 10}],
            },
        )
    )
    await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=20)
    await settled(gw)
    own = await usage(gw, KEY_CHAT)
    assert own.status_code == 200 and own.json()["scope"] == "key" and own.json()["name"] == "ops-bot"
    assert own.json()["spend_usd"] == pytest.approx(0.016)
    team = (await usage(gw, KEY_CHAT, team="ops")).json()
    assert team["hard_usd"] == 10 and team["remaining_usd"] == pytest.approx(10 - 0.016)
    assert team["by_model"]["chat"]["completion_tokens"] == 16
    assert (await usage(gw, KEY_CHAT, team="research")).status_code == 403
    assert (await usage(gw, KEY_CHAT, key="research-agents")).status_code == 403
    assert (await usage(gw, "sk-wrong")).status_code == 401
    admin = await usage(gw, team="research")
    assert admin.status_code == 200 and admin.json()["spend_usd"] == 0
    assert gw.gateway.limits is not None
    assert (await gw.gateway.limits.spend(team="ops"))["spend_usd"] == pytest.approx(0.016)


async def test_restart_keeps_the_spend(engines: Any, gateway_factory: Any, tmp_path: Any) -> None:
    raw = limits_config(
        engines,
        prices=PRICES,
        budgets={
            "sqlite_path": str(tmp_path / "spend.db"),
            "rules": [{"scope": "team", "name": "ops", "period": "monthly", "hard_usd": 0.04}],
        },
    )
    first = await gateway_factory(raw)
    await sdk(first, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=20)
    await settled(first)
    await first.stop()  # flushes the ledger
    second = await gateway_factory(raw)
    assert (await usage(second, team="ops")).json()["spend_usd"] == pytest.approx(0.016)
    with pytest.raises(openai.RateLimitError):  # 0.016 + 0.03 > 0.04: refused after the restart too
        await sdk(second, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=30)


async def test_soft_limit_posts_the_webhook_once(
    engines: Any, gateway_factory: Any, loopback_receiver: Any, tmp_path: Any
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    base = await loopback_receiver("/hook", hook)
    gw = await gateway_factory(
        limits_config(
            engines,
            prices=PRICES,
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "rules": [
                    {"scope": "team", "name": "ops", "soft_usd": 0.02, "hard_usd": 1, "webhook_url": f"{base}/hook"}
                ],
            },
        )
    )
    client = sdk(gw, KEY_CHAT)
    for _ in range(3):  # 0.016, 0.032 (crosses 0.02), 0.048
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)
        await settled(gw)
    await settled(gw)
    assert len(received) == 1
    assert received[0]["event"] == "budget_soft_limit" and received[0]["name"] == "ops"
    assert received[0]["spent_usd"] == pytest.approx(0.032)
    assert 'switchyard_budget_soft_alerts_total{team="ops"} 1.0' in gw.gateway.metrics.render().decode()


@pytest.mark.parametrize("cut", [True, False])
async def test_stream_without_max_tokens_stays_within_its_reservation_under_a_hard_budget(
    cut: bool, engine_factory: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    engine = await engine_factory(output_tokens=40)
    gw = await gateway_factory(
        limits_config(
            [engine],
            prices=PRICES,
            limits={"default_max_tokens": 10},
            budgets={
                "sqlite_path": str(tmp_path / "spend.db"),
                "cut_streams": cut,
                "rules": [{"scope": "team", "name": "ops", "hard_usd": 1.0}],
            },
        )
    )
    stream = await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, stream=True)  # no max_tokens
    pieces: list[str] = []
    async for chunk in stream:  # the upstream was told max_tokens = the reservation: nothing to cut
        pieces += [c.delta.content or "" for c in chunk.choices]
    assert len([p for p in pieces if p]) == 10
    await settled(gw)
    spend = (await usage(gw, team="ops")).json()["spend_usd"]
    assert spend == pytest.approx(0.010)  # 10 tokens, not the 40 the answer would have had


async def test_usage_endpoint_when_nothing_is_configured(gateway: Any) -> None:
    r = await usage(gateway, KEY_ALL)
    assert r.status_code == 404 and r.json()["error"]["code"] == "usage_disabled"
    assert gateway.gateway.limits is None
