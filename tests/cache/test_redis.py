"""The Redis store: one exact cache shared by two gateways (replicas), expiry by Redis TTL, purge."""

from __future__ import annotations

import asyncio
import os
import uuid

import aiohttp
import pytest
import redis.asyncio as redis

from gateway.keys import hash_key
from tests.cache.helpers import cache_config, chat, chat_stream, text_of
from tests.conftest import KEY_ALL, KEY_CHAT, sdk

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def prefix():
    r = redis.from_url(URL)
    try:
        await r.ping()
    except (redis.ConnectionError, OSError):
        pytest.skip("no Redis (run under scripts/with-redis.sh)")
    p = f"test-cache-{uuid.uuid4().hex[:10]}:"
    yield p
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


def shared(engines, prefix, **cache):
    raw = cache_config(engines, {"store": "redis", **cache}, admin_key_sha256=hash_key("sk-admin-r"))
    raw["redis"] = {"url": URL, "key_prefix": prefix}
    return raw


async def test_two_gateways_share_one_exact_cache(gateway_factory, engine_factory, prefix) -> None:
    engine = await engine_factory()
    a = await gateway_factory(shared([engine], prefix))
    b = await gateway_factory(shared([engine], prefix))
    status, first = await chat(sdk(a))
    assert status == "miss"
    status, second = await chat(sdk(b))
    assert status == "hit-exact" and second.choices[0].message.content == first.choices[0].message.content
    status, chunks = await chat_stream(sdk(b))
    assert status == "hit-exact" and text_of(chunks) == first.choices[0].message.content
    assert (await chat(sdk(b, KEY_CHAT)))[0] == "miss"  # another team, even on a shared store
    assert engine.stats.requests_total == 2


async def test_redis_entries_expire_and_purge(gateway_factory, engine_factory, prefix) -> None:
    engine = await engine_factory()
    gw = await gateway_factory(shared([engine], prefix, models={"embed": {"ttl_s": 0.3}}))
    client = sdk(gw)
    await chat(client, model="embed")
    assert (await chat(client, model="embed"))[0] == "hit-exact"
    await asyncio.sleep(0.45)
    assert (await chat(client, model="embed"))[0] == "miss"
    await chat(client)
    await chat(sdk(gw, KEY_CHAT))
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.base + "/admin/cache/purge",
            json={"model": "chat", "team": "research"},
            headers={"Authorization": "Bearer sk-admin-r"},
        ) as r:
            assert (await r.json())["purged"]["exact"] == 1
    assert (await chat(client))[0] == "miss"
    assert (await chat(sdk(gw, KEY_CHAT)))[0] == "hit-exact"


async def test_a_dead_redis_is_a_miss_not_an_error(gateway_factory, engine_factory, prefix) -> None:
    engine = await engine_factory()
    raw = shared([engine], prefix)
    raw["redis"] = {"url": "redis://127.0.0.1:1/0", "timeout_s": 0.1}  # nothing listens there
    gw = await gateway_factory(raw)
    client = sdk(gw, KEY_ALL)
    for _ in range(2):
        status, reply = await chat(client)
        assert status == "miss" and reply.choices[0].message.content
