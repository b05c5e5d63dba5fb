"""The two Batch API stores (SQLite, Redis) against one suite: files and paging per team, batches and
status moves, leases (claim, renew, release, take-over after expiry), exactly-once completion under
racing workers, failing the rest, progress and results in file order."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.batch.redis_store import RedisStore
from gateway.batch.store import BatchStore, Line, SqliteStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[BatchStore]:
    if request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "b.db"))
        yield s
        await s.close()
        return
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    prefix = f"test-batch-{uuid.uuid4().hex[:10]}:batch:"
    yield RedisStore(client, prefix)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _batch(bid: str, team: str = "t1", status: str = "in_progress") -> dict[str, Any]:
    return {
        "id": bid,
        "team": team,
        "key_name": "k",
        "status": status,
        "created_at": 100,
        "expires_at": 200,
        "model": "chat",
        "in_progress_at": 100,
        "obj": {"endpoint": "/v1/chat/completions", "metadata": {"a": "b"}},
    }


def _lines(bid: str, n: int, groups: int = 1) -> list[Line]:
    return [Line(bid, i, f"c{i}", f"g{i % groups}" if groups > 1 else "", b'{"i":%d}' % i) for i in range(n)]


async def test_files_are_per_team_and_page_newest_first(store: BatchStore) -> None:
    for i in range(5):
        row = {"id": f"file-{i}", "team": "t1", "purpose": "batch" if i % 2 else "batch_output"}
        await store.put_file({**row, "filename": f"f{i}.jsonl", "created_at": 10 + i}, b"x" * i)
    await store.put_file({"id": "file-x", "team": "t2", "purpose": "batch", "filename": "x", "created_at": 1}, b"y")
    first = await store.list_files("t1", None, None, 2)
    assert [f["id"] for f in first] == ["file-4", "file-3"]
    rest = await store.list_files("t1", None, "file-3", 10)
    assert [f["id"] for f in rest] == ["file-2", "file-1", "file-0"]
    assert [f["id"] for f in await store.list_files("t1", "batch", None, 10)] == ["file-3", "file-1"]
    assert [f["id"] for f in await store.list_files("t1", "batch", "file-2", 10)] == ["file-1"]
    assert await store.list_files("t1", None, "file-x", 10) == []  # another team's id: nothing after it
    f = await store.get_file("t1", "file-3")
    assert f == {"id": "file-3", "team": "t1", "purpose": "batch", "filename": "f3.jsonl", "bytes": 3, "created_at": 13}
    assert await store.file_content("t1", "file-3") == b"xxx"
    assert await store.get_file("t2", "file-3") is None and await store.file_content("t2", "file-3") is None
    assert not await store.delete_file("t2", "file-3")
    assert await store.delete_file("t1", "file-3")
    assert not await store.delete_file("t1", "file-3")
    assert await store.get_file("t1", "file-3") is None
    assert [f["id"] for f in await store.list_files("t1", "batch", None, 10)] == ["file-1"]


async def test_batches_status_moves_and_listing(store: BatchStore) -> None:
    await store.create_batch(_batch("b1"), _lines("b1", 3))
    await store.create_batch(_batch("b2", status="failed"), [])
    await store.create_batch(_batch("b3", team="t2"), _lines("b3", 1))
    b = await store.get_batch("b1", "t1")
    assert b is not None and b["total"] == 3 and b["completed"] == 0 and b["obj"]["metadata"] == {"a": "b"}
    assert b["in_progress_at"] == 100 and b["output_file_id"] is None and b["completed_at"] is None
    assert await store.get_batch("b1", "t2") is None and await store.get_batch("b1") is not None
    assert [r["id"] for r in await store.list_batches("t1", None, 10)] == ["b2", "b1"]
    assert [r["id"] for r in await store.list_batches("t1", "b2", 10)] == ["b1"]
    assert [r["id"] for r in await store.active_batches()] == ["b1", "b3"]
    assert await store.set_status("b1", "cancelling", ("validating", "in_progress"))
    assert not await store.set_status("b1", "cancelling", ("validating", "in_progress"))
    assert await store.set_status("b1", "cancelled", ("cancelling",), {"output_file_id": "file-out"})
    b = await store.get_batch("b1")
    assert b is not None and b["status"] == "cancelled" and b["output_file_id"] == "file-out"
    assert b["cancelling_at"] and b["cancelled_at"]
    assert [r["id"] for r in await store.active_batches()] == ["b3"]
    assert not await store.set_status("nope", "cancelling", ("in_progress",))


async def test_claim_order_leases_and_release(store: BatchStore) -> None:
    await store.create_batch(_batch("b1"), _lines("b1", 6, groups=2))
    a = await store.claim("b1", "A", 4, 60)
    assert [ln.idx for ln in a] == [0, 2, 4, 1]  # group g0 first, then file order
    assert a[0].custom_id == "c0" and a[0].grp == "g0" and a[0].body == b'{"i":0}'
    b = await store.claim("b1", "B", 10, 60)
    assert [ln.idx for ln in b] == [3, 5]
    assert await store.claim("b1", "C", 10, 60) == []
    p = await store.progress("b1")
    assert (p.pending, p.leased, p.done) == (0, 6, 0)
    await store.release("b1", [0, 2], "B")  # not B's: nothing happens
    assert await store.claim("b1", "C", 10, 60) == []
    await store.release("b1", [0], "A")
    await store.release("b1", [2], "A", after_s=0.3)
    assert [ln.idx for ln in await store.claim("b1", "C", 10, 60)] == [0]
    await asyncio.sleep(0.4)
    assert [ln.idx for ln in await store.claim("b1", "C", 10, 60)] == [2]


async def test_expired_leases_are_taken_over_and_renew_keeps_them(store: BatchStore) -> None:
    await store.create_batch(_batch("b1"), _lines("b1", 2))
    assert [ln.idx for ln in await store.claim("b1", "A", 2, 0.3)] == [0, 1]
    await asyncio.sleep(0.15)
    await store.renew("b1", [0], "A", 5)
    await store.renew("b1", [1], "B", 5)  # not B's
    await asyncio.sleep(0.25)
    p = await store.progress("b1")
    assert (p.pending, p.leased, p.done) == (1, 1, 0)
    assert [ln.idx for ln in await store.claim("b1", "B", 5, 60)] == [1]
    # A's late answer for line 1 still counts once (it was not done): B's is then dropped
    assert await store.complete("b1", 1, True, b"from-A", (3, 4))
    assert not await store.complete("b1", 1, True, b"from-B", (3, 4))
    await store.renew("b1", [1], "B", 60)  # done: no lease comes back
    p = await store.progress("b1")
    assert (p.pending, p.leased, p.done) == (0, 1, 1)


async def test_racing_workers_give_one_output_per_line(store: BatchStore) -> None:
    n = 40
    await store.create_batch(_batch("b1"), _lines("b1", n))

    async def worker(name: str) -> int:
        won = 0
        while lines := await store.claim("b1", name, 3, 0.05):
            await asyncio.sleep(0.06)  # past the lease: others take these lines over meanwhile
            for ln in lines:
                won += await store.complete("b1", ln.idx, ln.idx % 5 != 0, f"{ln.custom_id}:{name}".encode(), (1, 2))
        return won

    wins = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    assert sum(wins) == n
    results = await store.results("b1")
    assert len(results) == n
    assert [r.split(b":")[0] for _, r in results] == [f"c{i}".encode() for i in range(n)]
    assert [ok for ok, _ in results] == [i % 5 != 0 for i in range(n)]
    b = await store.get_batch("b1")
    assert b is not None and (b["completed"], b["failed"]) == (32, 8)
    assert (b["prompt_tokens"], b["completion_tokens"]) == (n, 2 * n)


async def test_fail_pending_fails_every_line_not_done(store: BatchStore) -> None:
    await store.create_batch(_batch("b1"), _lines("b1", 5))
    claimed = await store.claim("b1", "A", 2, 60)
    assert await store.complete("b1", claimed[0].idx, True, b"ok", (0, 0))
    n = await store.fail_pending("b1", lambda cid: f"expired {cid}".encode())
    assert n == 4
    assert not await store.complete("b1", claimed[1].idx, True, b"late", (0, 0))
    assert await store.fail_pending("b1", lambda cid: b"again") == 0
    assert await store.results("b1") == [(True, b"ok")] + [(False, f"expired c{i}".encode()) for i in range(1, 5)]
    p = await store.progress("b1")
    assert (p.pending, p.leased, p.done) == (0, 0, 5)
    b = await store.get_batch("b1")
    assert b is not None and (b["completed"], b["failed"]) == (1, 4)


def test_the_store_setting() -> None:
    from gateway.config import ConfigError
    from tests.batch.conftest import batch_config
    from tests.conftest import to_config

    engines = [SimpleNamespace(url="http://127.0.0.1:1")]
    raw = batch_config(engines, "redis:p:")
    assert to_config(raw).batch.store == "redis"
    del raw["redis"]
    with pytest.raises(ConfigError, match=r"batch.store.*needs the \[redis\] section"):
        to_config(raw)
    for bad in ("redis://x", "sqlite:///", "memory"):
        with pytest.raises(ConfigError, match="batch.store"):
            to_config(batch_config(engines, "x") | {"batch": {"store": bad}})


async def test_large_files_and_batches_go_in_pieces(store: BatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.batch.redis_store as rs

    monkeypatch.setattr(rs, "BYTES", 7)
    monkeypatch.setattr(rs, "CHUNK", 3)
    content = bytes(range(256)) * 3
    await store.put_file({"id": "f1", "team": "t1", "purpose": "batch", "filename": "a", "created_at": 1}, content)
    assert await store.file_content("t1", "f1") == content
    await store.put_file({"id": "f2", "team": "t1", "purpose": "batch", "filename": "b", "created_at": 1}, b"")
    assert await store.file_content("t1", "f2") == b""
    await store.put_file({"id": "f1", "team": "t1", "purpose": "batch", "filename": "a", "created_at": 1}, b"new")
    assert await store.file_content("t1", "f1") == b"new"  # replaced, as the output files of a re-finalize
    assert (await store.get_file("t1", "f1") or {}).get("bytes") == 3
    await store.create_batch(_batch("b1"), _lines("b1", 10, groups=3))
    got = await store.claim("b1", "A", 20, 60)
    assert [ln.idx for ln in got] == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]
    assert [ln.body for ln in got][:2] == [b'{"i":0}', b'{"i":3}']
    assert await store.fail_pending("b1", lambda cid: cid.encode()) == 10
    assert [r for _, r in await store.results("b1")] == [f"c{i}".encode() for i in range(10)]
    if isinstance(store, RedisStore):  # nothing left expiring: the staging keys were renamed or kept
        keys = [k async for k in store.r.scan_iter(match=f"{store.p}*", count=500)]
        assert keys and [await store.r.ttl(k) for k in keys] == [-1] * len(keys)
