"""The gateway's Redis client (gateway/redis_client.py) against a real Redis: a task cancelled while it
talks to Redis is cancelled. redis-py sends each command through `asyncio.wait_for`, which on Python
3.11 returns the send's result and drops a cancellation that lands as the send completes; the task
then runs on as if never cancelled (a stopping batch runner kept looping and `Gateway.stop` hung; a
request whose client had gone went on to its engine)."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import RedisConfig
from gateway.redis_client import make_redis


async def test_a_cancellation_during_redis_commands_is_never_lost() -> None:
    client = make_redis(RedisConfig(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), timeout_s=2.0))
    key = f"test-cancel-{uuid.uuid4().hex[:8]}"
    lost = 0

    async def talk() -> None:
        nonlocal lost
        while True:
            await client.get(key)
            if asyncio.current_task().cancelling():  # type: ignore[union-attr,unused-ignore]
                lost += 1  # cancel() was called, yet the command returned normally
                return

    try:
        await client.ping()
        rng = random.Random(7)
        for _ in range(200):
            task = asyncio.create_task(talk())
            await asyncio.sleep(rng.random() * 0.003)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled() or lost, "the task ended some other way"
        assert lost == 0, f"{lost} of 200 cancellations were dropped"
        assert await client.get(key) is None  # the client still works after all those cancellations
    finally:
        await client.aclose()


async def test_a_redis_that_stops_reading_fails_the_send_within_its_timeout() -> None:
    """The send under asyncio.timeout still ends in redis-py's own TimeoutError, and in time."""
    held: list[asyncio.StreamWriter] = []
    deaf = asyncio.Event()

    async def answer_then_stop_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while not deaf.is_set():  # answer each command (the handshake, a PING) with +OK ...
            data = await reader.read(65536)
            if not data:
                return
            writer.write(b"+OK\r\n" * (data.count(b"\r\n*") + data.startswith(b"*")))
        # ... then read nothing more: the next command's bytes fill the socket buffers

    server = await asyncio.start_server(answer_then_stop_reading, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_redis(RedisConfig(url=f"redis://127.0.0.1:{port}/0", timeout_s=0.3))
    try:
        await client.ping()
        deaf.set()
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="writing"):
            await client.set("k", b"x" * (64 << 20))
        assert time.monotonic() - started < 5  # bounded by timeout_s (per try), not hung
    finally:
        await client.aclose()
        for w in held:
            w.close()
        server.close()
