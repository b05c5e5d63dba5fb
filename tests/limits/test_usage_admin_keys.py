"""Spend of API keys created through `POST /admin/keys` (stored keys, not in the config file): the
usage report finds the key's team, so it shows what the key spent, to the key itself and to the
admin, after the key is revoked too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import sdk
from tests.limits.helpers import ADMIN_KEY, limits_config, settled, usage

MSG = [{"role": "user", "content": "Hello there"}]
PRICES = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token


@pytest.mark.parametrize("budget", [True, False])
async def test_usage_of_a_key_created_through_the_admin_api(
    budget: bool, engines: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    raw = limits_config(engines, prices=PRICES)
    raw["keystore"] = {"path": str(tmp_path / "keys.db")}
    raw["budgets"] = {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "key", "name": "*", "period": "daily", "hard_usd": 1.0}] if budget else [],
    }
    gw = await gateway_factory(raw)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{gw.base}/admin/keys", json={"team": "ops", "name": "stored-bot"}, headers=admin)
    assert r.status_code == 201
    key = r.json()["key"]
    await sdk(gw, key).chat.completions.create(model="chat", messages=MSG, max_tokens=20)  # 16 tokens
    await settled(gw)
    own = (await usage(gw, key)).json()
    assert own["name"] == "stored-bot" and own["spend_usd"] == pytest.approx(0.016)
    assert own["by_model"]["chat"]["completion_tokens"] == 16
    assert (await usage(gw, key="stored-bot")).json()["spend_usd"] == pytest.approx(0.016)  # the admin
    assert (await usage(gw, team="ops")).json()["spend_usd"] == pytest.approx(0.016)
    if budget:
        assert own["hard_usd"] == 1.0 and own["remaining_usd"] == pytest.approx(1 - 0.016)
    async with httpx.AsyncClient() as c:  # revoked: its spend is still reported to the admin
        assert (await c.delete(f"{gw.base}/admin/keys/stored-bot", headers=admin)).status_code == 200
    assert (await usage(gw, key="stored-bot")).json()["spend_usd"] == pytest.approx(0.016)
