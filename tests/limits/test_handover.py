"""A hot reload hands the limits state over: without Redis, the new gateway keeps the old one's
in-memory store (spend, in-flight reservations, buckets, slots) and its SQLite ledger, so the
spend settled after the reload by requests still running on the old gateway is seen by the new one
and a hard budget holds across the reload; with Redis, what the fail-open fallback has yet to
replay goes over too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from gateway.server import start_gateway
from tests.conftest import KEY_CHAT, sdk, to_config
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import ADMIN_KEY, limits_config, settled

MSG = [{"role": "user", "content": "Hello there"}]
PRICES = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token


async def reload(gw: Any, raw: dict[str, Any], path: Path) -> None:
    import httpx

    path.write_text(orjson.dumps(raw).decode())
    async with httpx.AsyncClient() as c:
        r = await c.post(gw.base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text


async def test_a_reload_without_redis_keeps_spend_and_reservations(engine_factory: Any, tmp_path: Path) -> None:
    slow = await engine_factory(ttft_s=1.5, output_tokens=16)
    raw = limits_config(
        [slow],
        prices=PRICES,
        limits={"rules": [{"scope": "team", "name": "ops", "requests_per_minute": 1, "burst": 4}]},
        budgets={
            "sqlite_path": str(tmp_path / "spend.db"),
            "rules": [{"scope": "team", "name": "ops", "hard_usd": 0.06}],
        },
    )
    path = tmp_path / "gw.yaml"
    path.write_text(orjson.dumps(raw).decode())
    gw = await start_gateway(to_config(raw), port=0, config_path=str(path))
    try:
        client = sdk(gw, KEY_CHAT)
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)  # spends 0.016
        running = asyncio.create_task(client.chat.completions.create(model="chat", messages=MSG, max_tokens=20))
        await asyncio.sleep(0.3)  # reserved 0.02, running on the old gateway
        old = gw.current
        await reload(gw, raw, path)
        assert gw.current is not old
        report = await gw.current.limits.spend(team="ops")
        assert report["spend_usd"] == pytest.approx(0.016) and report["reserved_usd"] == pytest.approx(0.02)
        await running  # settles on the old gateway, after the reload
        await settled(gw)
        for _ in range(50):
            if not old.background:
                break
            await asyncio.sleep(0.05)
        report = await gw.current.limits.spend(team="ops")
        assert report["spend_usd"] == pytest.approx(0.032) and report["reserved_usd"] == 0
        # 0.032 + 0.02 fits in 0.06; then 0.048 + 0.02 does not: the budget held across the reload
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)
        with pytest.raises(openai.RateLimitError) as exc:
            await client.chat.completions.create(model="chat", messages=MSG, max_tokens=20)
        assert exc.value.code == "budget_exceeded"
        # the requests bucket went over too: 3 of its 4 were taken before this one (the refused one took none)
        raw_resp = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=1)
        assert raw_resp.headers["x-ratelimit-remaining-requests"] == "0"
    finally:
        await gw.stop()
    # the ledger went over too: a restart reads every settled request back
    again = await start_gateway(to_config(raw), port=0)
    try:
        assert (await again.gateway.limits.spend(team="ops"))["spend_usd"] == pytest.approx(0.049)
    finally:
        await again.stop()


async def test_a_reload_with_redis_hands_over_what_is_left_to_replay(engines: Any, tmp_path: Path, prefix: str) -> None:
    raw = limits_config(
        engines, prices=PRICES, budgets={"rules": []}, redis={"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3}
    )
    path = tmp_path / "gw.yaml"
    path.write_text(orjson.dumps(raw).decode())
    gw = await start_gateway(to_config(raw), port=0, config_path=str(path))
    try:
        old = gw.current
        journal = old.limits.store.journal
        await reload(gw, raw, path)
        assert gw.current.limits.store.journal is journal
        assert gw.current.limits.store.fallback is old.limits.store.fallback
        # another Redis: nothing to hand over
        other = dict(raw, redis={"url": REDIS_URL, "key_prefix": prefix + "other:", "timeout_s": 3})
        await reload(gw, other, path)
        assert gw.current.limits.store.journal is not journal
    finally:
        await gw.stop()
