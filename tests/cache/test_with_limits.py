"""The cache with the real limits phase in front of it: a hit costs no upstream money (the budget
shows the saving), still counts toward requests per minute, and the saved USD is priced like spend."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.cache.helpers import Q
from tests.conftest import sdk
from tests.limits.helpers import limits_config, settled, usage

PRICES = {"chat": {"input_per_mtok": 1000, "output_per_mtok": 2000}}  # $0.001 / $0.002 per token


async def test_hits_cost_nothing_count_toward_rpm_and_report_the_saving(
    engine_factory, gateway_factory, tmp_path
) -> None:
    engine = await engine_factory(output_tokens=16)
    raw = limits_config(
        [engine],
        prices=PRICES,
        limits={
            "rules": [{"scope": "key", "name": "research-agents", "requests_per_minute": 6}]
        },  # refills one per 10 s
        budgets={
            "sqlite_path": str(tmp_path / "spend.db"),
            "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 10}],
        },
    )
    raw["cache"] = {}
    gw = await gateway_factory(raw)
    client = sdk(gw)
    seen: list[tuple[str | None, int]] = []
    first = None
    for _ in range(3):
        r = await client.chat.completions.with_raw_response.create(
            model="chat", messages=Q, temperature=0, max_tokens=64
        )
        seen.append((r.headers.get("x-switchyard-cache"), int(r.headers["x-ratelimit-remaining-requests"])))
        first = first or r.parse()
    await settled(gw)

    assert [s for s, _ in seen] == ["miss", "hit-exact", "hit-exact"]
    assert engine.stats.requests_total == 1
    remaining = [n for _, n in seen]
    assert remaining[0] > remaining[1] > remaining[2], "hits must still count toward requests per minute"

    one_call = first.usage.prompt_tokens * 0.001 + first.usage.completion_tokens * 0.002
    report = (await usage(gw, team="research")).json()
    assert report["spend_usd"] == pytest.approx(one_call)  # only the miss was paid for
    async with httpx.AsyncClient() as h:
        text = (await h.get(gw.base + "/metrics")).text
    saved = float(re.search(r'^switchyard_cache_saved_usd_total\{model="chat"\} (\S+)$', text, re.M).group(1))
    assert saved == pytest.approx(2 * one_call)
