"""Fixtures of the Batch API tests: a gateway over simulated engines with `[batch]` on a SQLite file
under tmp_path, the openai SDK as client, and helpers to build input files and wait for batches."""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from openai import AsyncOpenAI
from openai.types import Batch

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, KEY_CHAT, gateway_config

KEY_SECOND = "sk-test-research-second"  # team "research", a second key
FINAL = ("completed", "failed", "expired", "cancelled")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS = "redis:"  # a `db` of batch_config: "redis:<key prefix>"


def batch_config(engines: list[Any], db: str, **batch: Any) -> dict[str, Any]:
    """gateway_config (model "chat" on every engine; keys research-agents / ops-bot) plus [batch];
    `db`: a SQLite path, or "redis:<key prefix>" for `store = "redis"` on $REDIS_URL."""
    raw = gateway_config(engines)
    raw["keys"].append({"name": "research-second", "team": "research", "sha256": hash_key(KEY_SECOND)})
    if db.startswith(REDIS):
        raw["redis"] = {"url": REDIS_URL, "key_prefix": db.removeprefix(REDIS), "timeout_s": 3}
        raw["batch"] = {"store": "redis", "poll_s": 0.05, **batch}
    else:
        raw["batch"] = {"store": f"sqlite:///{db}", "poll_s": 0.05, **batch}
    return raw


@pytest.fixture(params=["sqlite", "redis"])
async def store_db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """The `db` of batch_config for each store kind: a SQLite file under tmp_path, or a random Redis
    key prefix (its keys deleted after the test)."""
    if request.param == "sqlite":
        yield str(tmp_path / "b.db")
        return
    prefix = f"test-batch-{uuid.uuid4().hex[:10]}:"
    yield REDIS + prefix
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def line(cid: str, content: str = "hello", model: str = "chat", url: str = "/v1/chat/completions", **body: Any) -> dict:
    messages = body.pop("messages", None) or [{"role": "user", "content": content}]
    return {"custom_id": cid, "method": "POST", "url": url, "body": {"model": model, "messages": messages, **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)


async def upload(client: AsyncOpenAI, lines: list[Any]) -> str:
    f = await client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return f.id


async def start_batch(
    client: AsyncOpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", window: str = "24h"
) -> Batch:
    """Upload `lines` as a batch input file and create the batch over it, as the SDK does."""
    fid = await upload(client, lines)
    return await client.batches.create(input_file_id=fid, endpoint=endpoint, completion_window=window)


async def wait_final(client: AsyncOpenAI, batch_id: str, timeout: float = 60.0) -> Batch:
    end = time.monotonic() + timeout
    while True:
        b = await client.batches.retrieve(batch_id)
        if b.status in FINAL:
            return b
        if time.monotonic() > end:
            raise AssertionError(f"batch {batch_id} still {b.status} after {timeout}s: {b.request_counts}")
        await asyncio.sleep(0.05)


async def output_lines(client: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [orjson.loads(x) for x in content.content.splitlines() if x.strip()]


__all__ = [
    "KEY_ALL",
    "KEY_CHAT",
    "KEY_SECOND",
    "batch_config",
    "jsonl",
    "line",
    "output_lines",
    "start_batch",
    "upload",
    "wait_final",
]
