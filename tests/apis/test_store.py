"""Response stores: one behaviour for memory, SQLite and Redis (owner isolation, TTL, delete), plus
the memory store's bounds and the config section."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.apis.responses import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponsesConfig,
    SqliteResponseStore,
    StoredResponse,
    make_store,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rec(resp_id: str, owner: str = "team\x1fkey", size: int = 10) -> StoredResponse:
    return StoredResponse(
        resp_id,
        owner,
        1.0,
        "e0/model",
        {"id": resp_id, "object": "response"},
        [{"role": "user", "content": "x" * size}],
    )


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: Any, tmp_path: Any) -> AsyncIterator[tuple[Any, Clock | None]]:
    if request.param == "memory":
        clock = Clock()
        yield MemoryResponseStore(ttl_s=10, clock=clock), clock
    elif request.param == "sqlite":
        clock = Clock()
        s = SqliteResponseStore(str(tmp_path / "r.sqlite"), ttl_s=10, clock=clock)
        yield s, clock
        await s.close()
    else:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            await client.ping()
        except Exception:
            pytest.fail(f"Redis at {REDIS_URL} does not answer (run the tests via scripts/with-redis.sh)")
        prefix = f"test-resp-{uuid.uuid4().hex[:8]}:"
        yield RedisResponseStore(client, ttl_s=10, prefix=prefix), None
        async for k in client.scan_iter(match=f"{prefix}*"):
            await client.delete(k)
        await client.aclose()


async def test_put_get_delete_per_owner(store: tuple[Any, Clock | None]) -> None:
    s, _ = store
    await s.put(rec("resp_1"))
    got = await s.get("resp_1", "team\x1fkey")
    assert got is not None and got.deployment == "e0/model" and got.conversation[0]["content"] == "x" * 10
    assert got.response == {"id": "resp_1", "object": "response"}
    assert await s.get("resp_1", "team\x1fother-key") is None
    assert await s.get("resp_1", "other-team\x1fkey") is None
    assert await s.get("resp_unknown", "team\x1fkey") is None
    assert await s.delete("resp_1", "other-team\x1fkey") is False
    assert await s.get("resp_1", "team\x1fkey") is not None
    assert await s.delete("resp_1", "team\x1fkey") is True
    assert await s.get("resp_1", "team\x1fkey") is None
    assert await s.delete("resp_1", "team\x1fkey") is False


async def test_ttl(store: tuple[Any, Clock | None]) -> None:
    s, clock = store
    if clock is None:  # redis: the key's own expiry
        s.ttl_s = 0.2
        await s.put(rec("resp_t"))
        assert await s.get("resp_t", "team\x1fkey") is not None
        import asyncio

        await asyncio.sleep(0.4)
    else:
        await s.put(rec("resp_t"))
        clock.t += 9
        assert await s.get("resp_t", "team\x1fkey") is not None
        clock.t += 2
    assert await s.get("resp_t", "team\x1fkey") is None


async def test_memory_bounds() -> None:
    clock = Clock()
    one = len(rec("resp_0").dumps())
    s = MemoryResponseStore(ttl_s=100, max_bytes=one * 3, max_items=10, clock=clock)
    for i in range(5):
        await s.put(rec(f"resp_{i}"))
    assert len(s) == 3 and s.bytes == one * 3
    assert await s.get("resp_1", "team\x1fkey") is None and await s.get("resp_4", "team\x1fkey") is not None
    s2 = MemoryResponseStore(ttl_s=100, max_items=2, clock=clock)
    for i in range(3):
        await s2.put(rec(f"resp_{i}"))
    assert len(s2) == 2 and await s2.get("resp_0", "team\x1fkey") is None
    tiny = MemoryResponseStore(max_bytes=50)
    await tiny.put(rec("big", size=100))  # larger than the whole store: not kept
    assert len(tiny) == 0 and tiny.bytes == 0
    # expired records go first even under the bounds
    clock.t += 200
    await s.put(rec("resp_new"))
    assert len(s) == 1


def test_config_and_factory(tmp_path: Any) -> None:
    assert isinstance(make_store(), MemoryResponseStore)
    s = make_store(ResponsesConfig(store="sqlite", sqlite_path=str(tmp_path / "x.sqlite"), ttl_s=5))
    assert isinstance(s, SqliteResponseStore) and s.ttl_s == 5
    with pytest.raises(ValueError, match="sqlite_path"):
        ResponsesConfig(store="sqlite")
    with pytest.raises(ValueError, match="redis"):
        make_store(ResponsesConfig(store="redis"))
    with pytest.raises(ValueError):
        ResponsesConfig(unknown=1)  # type: ignore[call-arg]
