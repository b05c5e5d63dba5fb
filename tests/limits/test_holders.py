"""Reservations belong to their request (the holder): concurrency slots and budget reservations are
released by the request's settle, or expire on their own deadline when nobody settles them (a killed
worker, a lost settle), however busy the key stays. A live process renews its own. One suite, both
stores (memory, Redis). Plus the gateway seams: a client gone while its admission is in flight, a
worker killed before its settle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from gateway.limits.redis_store import RedisStore
from gateway.limits.store import BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, Hold, MemoryStore
from tests.conftest import KEY_CHAT, sdk
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import limits_config, settled

HOLD = 0.4  # seconds a reservation lives without renewal in these tests
SLOW = 1e-6


@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, prefix: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    yield RedisStore(client)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def k(prefix: str) -> Any:
    return lambda name: f"{prefix}{name}"


async def test_a_leaked_slot_expires_while_the_key_stays_busy(store: Any, k: Any) -> None:
    c = CounterCheck(k("slots"), 2)
    assert (await store.admit([], [c], [], "dead-worker", HOLD)).ok  # never settled
    deadline = time.monotonic() + HOLD + 0.5
    i = 0
    while time.monotonic() < deadline:  # steady traffic on the same key, one slot at a time
        assert (await store.admit([], [c], [], f"live-{i}", HOLD)).ok
        await store.settle([], [c.key], [], f"live-{i}")
        i += 1
        await asyncio.sleep(0.02)
    # the leaked slot is gone: both slots are free again
    assert (await store.admit([], [c], [], "a", HOLD)).ok
    assert (await store.admit([], [c], [], "b", HOLD)).ok
    assert not (await store.admit([], [c], [], "c", HOLD)).ok


async def test_a_leaked_budget_reservation_expires(store: Any, k: Any) -> None:
    g = BudgetCheck(k("spend"), hard=1000, amount=600, ttl_s=3600)
    assert (await store.admit([], [], [g], "dead-worker", HOLD)).ok
    assert not (await store.admit([], [], [g], "x", HOLD)).ok  # 600 + 600 > 1000
    await asyncio.sleep(HOLD + 0.1)
    assert (await store.admit([], [], [g], "y", HOLD)).ok  # the dead worker's 600 came back
    assert (await store.spend(g.key)).reserved == 600
    # the dead worker's settle arriving late is still counted once (its reservation is not released twice)
    await store.settle([], [], [BudgetSettle(g.key, 50, "m", 5, 5, 3600)], "dead-worker")
    await store.settle([], [], [BudgetSettle(g.key, 50, "m", 5, 5, 3600)], "dead-worker")  # a replay: ignored
    s = await store.spend(g.key)
    assert (s.spent, s.reserved) == (50, 600)


async def test_renewed_reservations_do_not_expire(store: Any, k: Any) -> None:
    c = CounterCheck(k("renewed"), 1)
    g = BudgetCheck(k("renewed-spend"), hard=1000, amount=600, ttl_s=3600)
    assert (await store.admit([], [c], [g], "long-stream", HOLD)).ok
    for _ in range(4):
        await asyncio.sleep(HOLD / 2)
        await store.renew([Hold("long-stream", (c.key,), (g.key,))], HOLD)
    assert not (await store.admit([], [c], [], "other", HOLD)).ok  # still held after 2 x HOLD
    assert (await store.spend(g.key)).reserved == 600
    await store.settle([], [c.key], [BudgetSettle(g.key, 100, "m", 1, 1, 3600)], "long-stream")
    assert (await store.admit([], [c], [], "other", HOLD)).ok
    s = await store.spend(g.key)
    assert (s.spent, s.reserved) == (100, 0)


async def test_a_settle_is_applied_once(store: Any, k: Any) -> None:
    b = BucketCheck(k("tpm"), SLOW, 1000, 900)
    c = CounterCheck(k("once"), 1)
    g = BudgetCheck(k("once-spend"), hard=None, amount=0, ttl_s=3600)
    assert (await store.admit([b], [c], [g], "r1", HOLD)).ok
    for _ in range(2):  # the second is a replay of a settle whose answer was lost
        await store.settle([(b, 800.0)], [c.key], [BudgetSettle(g.key, 70, "m", 3, 4, 3600)], "r1")
    s = await store.spend(g.key)
    assert s.spent == 70 and s.by_model["m"]["requests"] == 1
    probe = await store.admit([BucketCheck(b.key, SLOW, 1000, 1)], [], [])
    assert probe.levels[0] == pytest.approx(899, abs=0.1)  # refunded 800 once, not twice


async def test_a_release_without_usage_records_no_request(store: Any, k: Any) -> None:
    g = BudgetCheck(k("release"), hard=1000, amount=300, ttl_s=3600)
    assert (await store.admit([], [], [g], "gone", HOLD)).ok
    await store.settle([], [], [BudgetSettle(g.key, 0, "", 0, 0, 3600)], "gone")
    s = await store.spend(g.key)
    assert (s.spent, s.reserved, s.by_model) == (0, 0, {})


def redis_config(engines: list[Any], prefix: str, **limits: Any) -> dict[str, Any]:
    return limits_config(
        engines,
        limits={"rules": [{"scope": "team", "name": "ops", "concurrent": 1}], **limits},
        prices={"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}},
        budgets={"rules": [{"scope": "team", "name": "ops", "hard_usd": 1.0}]},
        redis={"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3},
    )


async def test_a_client_gone_while_its_admission_is_in_flight_leaks_nothing(
    engines: Any, gateway_factory: Any, prefix: str
) -> None:
    gw = await gateway_factory(redis_config(engines, prefix))
    limits = gw.gateway.limits
    redis_store = limits.store.primary
    script = redis_store._script

    async def slow_script(keys: Any, args: Any) -> Any:
        await asyncio.sleep(1.5)  # Redis answers late: the client is gone by then (FIN + half_close_grace_s)
        return await script(keys=keys, args=args)

    redis_store._script = slow_script
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post(
                f"{gw.url}/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100},
                headers={"Authorization": f"Bearer {KEY_CHAT}"},
                timeout=0.2,
            )
    await asyncio.sleep(1.5)
    await settled(gw)
    redis_store._script = script
    assert (await limits.spend(team="ops"))["reserved_usd"] == 0
    # the concurrency slot came back: the next request gets it
    assert (
        await sdk(gw, KEY_CHAT).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    ).choices


async def test_a_killed_workers_slot_comes_back_while_others_keep_using_the_key(
    engine_factory: Any, gateway_factory: Any, prefix: str
) -> None:
    engine = await engine_factory()
    raw = redis_config([engine], prefix, reservation_ttl_s=1.0)
    dying, alive = await gateway_factory(raw), await gateway_factory(raw)

    async def never(*args: Any, **kwargs: Any) -> list[int]:  # the worker dies before its settle
        return [0, 0]

    dying.gateway.limits.store.primary.settle = never
    await sdk(dying, KEY_CHAT).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    await settled(dying)
    client = sdk(alive, KEY_CHAT)
    started, refused = time.monotonic(), 0
    while True:  # steady traffic through the other worker
        try:
            await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            break
        except openai.RateLimitError:
            refused += 1
        assert time.monotonic() - started < 3.0, "the dead worker's slot never came back"
        await asyncio.sleep(0.05)
    assert refused > 0  # it was held at first
    assert time.monotonic() - started >= 0.9


async def test_a_client_gone_while_its_deployment_quota_is_taken_gets_its_tokens_back(
    engine_factory: Any, gateway_factory: Any, prefix: str
) -> None:
    engine = await engine_factory(profile="remote")
    raw = limits_config([engine], redis={"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3})
    raw["backends"][0]["kind"] = "openai-compatible"
    raw["backends"][0]["limits"] = {"tokens_per_minute": 1000}
    gw = await gateway_factory(raw)
    redis_store = gw.gateway.quotas.store.primary
    script = redis_store._script

    async def slow_script(keys: Any, args: Any) -> Any:
        await asyncio.sleep(1.5)
        return await script(keys=keys, args=args)

    redis_store._script = slow_script
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.TimeoutException):
            await c.post(
                f"{gw.url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY_CHAT}"}, timeout=0.2
            )
    await asyncio.sleep(1.5)
    await settled(gw)
    redis_store._script = script
    # 600 + prompt of the cancelled request were given back: another 600 fits in the 1000 a minute
    started = time.monotonic()
    assert (
        await sdk(gw, KEY_CHAT).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=600
        )
    ).choices
    assert time.monotonic() - started < 2.0  # at once, not after waiting for the quota to refill
