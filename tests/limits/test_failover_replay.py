"""Fail open, then reconcile: spend settled on the local fallback while Redis was away is written to
Redis when it is back, exactly once (replays are deduplicated even when their answer is lost), and a
settle that failed against Redis (the request was admitted there) is sent again, applied once: its
slot and reservation are released and its spend counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.limits.failover import FailoverStore
from gateway.limits.redis_store import RedisStore
from gateway.limits.store import BudgetCheck, BudgetSettle, CounterCheck, MemoryStore
from tests.conftest import KEY_CHAT, sdk
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import limits_config, settled, usage


class Flaky:
    """A RedisStore that can be taken down, or made to lose its answers (the script still runs)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.down = False
        self.lose_answers: dict[str, int] = {}  # method -> how many of its next answers are lost

    def __getattr__(self, name: str) -> Any:
        inner = getattr(self.store, name)
        if not callable(inner) or name == "close":
            return inner

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise RedisConnectionError("down")
            result = await inner(*args, **kwargs)
            if self.lose_answers.get(name):
                self.lose_answers[name] -= 1
                raise TimeoutError("answer lost")
            return result

        return call


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def setup(prefix: str) -> AsyncIterator[tuple[FailoverStore, Flaky, Clock, Any]]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    flaky = Flaky(RedisStore(client))
    clock = Clock()
    store = FailoverStore(flaky, MemoryStore(), True, 1.0, lambda op, e: None, clock)
    yield store, flaky, clock, (lambda name: f"{prefix}{name}")
    await store.close()
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


async def one(store: FailoverStore, g: BudgetCheck, holder: str, usd: int, c: CounterCheck | None = None) -> list[int]:
    admission = await store.admit([], [c] if c else [], [g], holder)
    assert admission.ok
    return await admission.store.settle([], [c.key] if c else [], [BudgetSettle(g.key, usd, "m", 10, 5, 3600)], holder)


async def recovered(store: FailoverStore, clock: Clock, g: BudgetCheck) -> None:
    clock.t += 2  # past retry_redis_after_s: the next call tries Redis again
    admission = await store.admit([], [], [BudgetCheck(g.key, None, 0, 3600)], "probe")
    assert admission.ok and admission.store is store
    await admission.store.settle([], [], [BudgetSettle(g.key, 0, "", 0, 0, 3600)], "probe")
    await store.reconciled()


async def test_spend_settled_on_the_fallback_is_replayed_once(setup: Any) -> None:
    store, flaky, clock, k = setup
    g = BudgetCheck(k("spend"), hard=10_000, amount=1000, ttl_s=3600)
    await one(store, g, "before", 100)
    flaky.down = True
    await one(store, g, "during-1", 50)  # Redis down: admitted and settled by the fallback
    await one(store, g, "during-2", 70)
    assert (await flaky.store.spend(g.key)).spent == 100
    flaky.down = False
    flaky.lose_answers = {"replay": 1}  # the first replay reaches Redis but its answer is lost: sent again
    await recovered(store, clock, g)
    clock.t += 2
    await recovered(store, clock, g)
    s = await flaky.store.spend(g.key)
    assert (s.spent, s.reserved) == (220, 0)
    assert s.by_model["m"] == {"usd_nano": 220, "prompt_tokens": 30, "completion_tokens": 15, "requests": 3}
    for _ in range(3):  # nothing left to replay: later recoveries add nothing
        clock.t += 2
        await recovered(store, clock, g)
    assert (await flaky.store.spend(g.key)).spent == 220


async def test_a_settle_that_failed_against_redis_is_sent_again_once(setup: Any) -> None:
    store, flaky, clock, k = setup
    g = BudgetCheck(k("spend2"), hard=1000, amount=600, ttl_s=3600)
    c = CounterCheck(k("slots2"), 1)
    admission = await store.admit([], [c], [g], "r1")  # admitted by Redis
    assert admission.ok and admission.store is store
    flaky.down = True  # ... which is gone when the request ends
    await admission.store.settle([], [c.key], [BudgetSettle(g.key, 80, "m", 1, 2, 3600)], "r1")
    flaky.down = False
    flaky.lose_answers = {"settle": 1}  # the settle sent again reaches Redis, its answer is lost
    await recovered(store, clock, g)
    clock.t += 2
    await recovered(store, clock, g)
    s = await flaky.store.spend(g.key)
    assert (s.spent, s.reserved) == (80, 0)  # spend once, reservation released
    assert s.by_model["m"]["requests"] == 1
    assert (await store.admit([], [c], [], "r2")).ok  # the slot came back


async def test_gateway_reconciles_outage_spend_when_redis_returns(
    engines: Any, gateway_factory: Any, private_redis: Any, tmp_path: Any
) -> None:
    gw = await gateway_factory(
        limits_config(
            engines,
            limits={"fail_policy": "open", "retry_redis_after_s": 0.5},
            prices={"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}},
            budgets={"rules": [{"scope": "team", "name": "ops", "hard_usd": 10}]},
            redis={"url": private_redis.url, "timeout_s": 0.2},
        )
    )
    client = sdk(gw, KEY_CHAT)
    msg = [{"role": "user", "content": "Hello there"}]
    private_redis.kill()
    for _ in range(3):  # 16 output tokens each at $0.001: $0.048 spent while Redis is away
        await client.chat.completions.create(model="chat", messages=msg, max_tokens=20)
    await settled(gw)
    private_redis.start()  # back, empty (no persistence): only the outage's spend is to be written
    await asyncio.sleep(0.6)
    await client.chat.completions.create(model="chat", messages=msg, max_tokens=20)  # Redis again: replays
    await settled(gw)
    await gw.gateway.limits.store.reconciled()
    report = (await usage(gw, team="ops")).json()
    assert report["spend_usd"] == pytest.approx(0.064)
    assert report["by_model"]["chat"]["requests"] == 4
