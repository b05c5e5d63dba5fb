"""One suite, two stores: the in-memory store and the Redis store (real Redis, one Lua call per
check) must behave the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.limits.redis_store import RedisStore
from gateway.limits.store import BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, MemoryStore
from tests.limits.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, prefix: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=20, timeout=5, socket_timeout=5)
    client = aioredis.Redis(connection_pool=pool)
    yield RedisStore(client)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def k(prefix: str) -> Any:
    return lambda name: f"{prefix}{name}"


SLOW = 1e-6  # a refill rate so slow the test never sees it


async def test_bucket_admits_up_to_capacity_then_refuses(store: Any, k: Any) -> None:
    b = BucketCheck(k("rpm"), SLOW, 5, 1)
    oks = [(await store.admit([b], [], [])).ok for _ in range(7)]
    assert oks == [True] * 5 + [False] * 2
    refused = await store.admit([b], [], [])
    assert refused.failed == "bucket:0" and refused.retry_after_s > 1000


async def test_admission_is_all_or_nothing(store: Any, k: Any) -> None:
    wide = BucketCheck(k("wide"), SLOW, 100, 1)
    narrow = BucketCheck(k("narrow"), SLOW, 1, 1)
    assert (await store.admit([wide, narrow], [], [])).ok
    refused = await store.admit([wide, narrow], [], [])
    assert not refused.ok and refused.failed == "bucket:1"
    after = await store.admit([wide], [], [])
    assert after.levels == [pytest.approx(98, abs=0.01)]  # the refused request took nothing from `wide`


async def test_concurrency_counter_holds_and_releases(store: Any, k: Any) -> None:
    c = CounterCheck(k("conc"), 2)
    assert (await store.admit([], [c], [], "r1")).ok
    assert (await store.admit([], [c], [], "r2")).ok
    refused = await store.admit([], [c], [], "r3")
    assert refused.failed == "counter:0"
    await store.settle([], [c.key], [], "r1")
    assert (await store.admit([], [c], [], "r4")).ok


async def test_budget_reserves_worst_case_and_settles_real_cost(store: Any, k: Any) -> None:
    g = BudgetCheck(k("spend"), hard=1000, amount=400, ttl_s=3600)
    assert (await store.admit([], [], [g], "r1")).ok
    assert (await store.admit([], [], [g], "r2")).ok
    refused = await store.admit([], [], [g], "r3")  # 800 reserved + 400 > 1000
    assert refused.failed == "budget:0"
    s = await store.spend(g.key)
    assert (s.spent, s.reserved) == (0, 800)
    totals = await store.settle([], [], [BudgetSettle(g.key, 150, "chat", 10, 5, 3600)], "r1")
    assert totals == [150]
    s = await store.spend(g.key)
    assert (s.spent, s.reserved) == (150, 400)
    assert s.by_model == {"chat": {"usd_nano": 150, "prompt_tokens": 10, "completion_tokens": 5, "requests": 1}}
    assert (await store.admit([], [], [g], "r4")).ok  # 150 + 400 + 400 <= 1000


async def test_untracked_budget_never_refuses(store: Any, k: Any) -> None:
    g = BudgetCheck(k("free"), hard=None, amount=10**12, ttl_s=None)
    for i in range(3):
        assert (await store.admit([], [], [g], f"r{i}")).ok


async def test_settle_refund_restores_tokens(store: Any, k: Any) -> None:
    b = BucketCheck(k("tpm"), SLOW, 1000, 900)
    assert (await store.admit([b], [], [])).ok
    await store.settle([(b, 800.0)], [], [])  # used 100
    probe = await store.admit([BucketCheck(b.key, SLOW, 1000, 850)], [], [])
    assert probe.ok and probe.levels[0] == pytest.approx(50, abs=0.1)


async def test_parallel_admissions_never_exceed_capacity(store: Any, k: Any) -> None:
    b = BucketCheck(k("race"), SLOW, 50, 1)
    results = await asyncio.gather(*(store.admit([b], [], []) for _ in range(200)))
    assert sum(r.ok for r in results) == 50


async def test_settles_and_admissions_in_one_loop_turn(store: Any, k: Any) -> None:
    """The Redis store sends everything queued in one event-loop turn as one script call: settles
    and admissions mixed must give the same answers as one by one."""
    c = CounterCheck(k("mixed-conc"), 3)
    g = BudgetCheck(k("mixed-spend"), hard=10_000, amount=1000, ttl_s=60)
    assert all(r.ok for r in await asyncio.gather(*(store.admit([], [c], [g], f"r{i}") for i in range(3))))
    settles = [store.settle([], [c.key], [BudgetSettle(g.key, 100, "m", 1, 1, 60)], f"r{i}") for i in range(3)]
    totals = await asyncio.gather(*settles, store.admit([], [c], [g], "r3"))
    assert sorted(t[0] for t in totals[:3]) == [100, 200, 300]
    assert totals[3].ok  # queued after the three settles: the counter had room again
    s = await store.spend(g.key)
    assert (s.spent, s.reserved) == (300, 1000)


async def test_redis_settle_rides_along_with_the_next_admission(prefix: str) -> None:
    """limits.settle_delay_s: a settle waits for the next admission and both go in one script call;
    alone it still goes after the delay."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    store = RedisStore(client, settle_delay_s=0.05)
    sent: list[int] = []
    script = store._script

    async def counting(keys: Any, args: Any) -> Any:
        sent.append(int(args[0]))  # operations in this call
        return await script(keys=keys, args=args)

    store._script = counting  # type: ignore[assignment]
    c = CounterCheck(f"{prefix}ride", 1)
    assert (await store.admit([], [c], [], "r1")).ok
    settle = asyncio.ensure_future(store.settle([], [c.key], [], "r1"))
    await asyncio.sleep(0)
    admitted = await store.admit([], [c], [], "r2")  # queued after the settle, in the same call
    await settle
    assert admitted.ok and sent == [1, 2]
    await asyncio.wait_for(store.settle([], [c.key], [], "r2"), timeout=2)  # no admission follows: sent alone
    assert sent == [1, 2, 1]
    await client.delete(c.key)
    await client.aclose()
