"""The one Redis client of a gateway process, built from `[redis]` in the config.

redis-py's default asyncio pool raises MaxConnectionsError past its limit instead of waiting, so a
BlockingConnectionPool is used: callers wait up to `timeout_s` for a connection, and every command
is bounded by the same socket timeout, so no request hangs on a dead Redis.

Cancellation: redis-py (8.x) bounds each command's send with `asyncio.wait_for`, which on Python
3.11 returns the result and DROPS a cancellation that arrives as the send completes, and the send
of a small command completes at once, so most cancellations during a command were lost (126 of 200
in tests/gateway/test_redis_client.py): a stopping batch runner looped on and `Gateway.stop` hung, a
request whose client had gone went on to its engine. The pool's connections therefore send under
`asyncio.timeout`, which has no such gap (the project bans `wait_for` for the same reason).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import RedisConfig


class _CancelSafeSend:
    """Mixed in before a redis-py connection class: the same send, bounded by asyncio.timeout."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit = self.socket_timeout
        if not limit:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        # redis-py takes the wait_for path only when socket_timeout is set; the connection is this
        # task's alone (taken from the pool) while it sends, so lifting the value for the call is safe.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None  # redis-py's own error
        finally:
            self.socket_timeout = limit


def _cancel_safe(cls: type) -> type:
    return type(f"CancelSafe{cls.__name__}", (_CancelSafeSend, cls), {})


def make_redis(config: RedisConfig) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=config.timeout_s,
        socket_timeout=config.timeout_s,
        socket_connect_timeout=config.timeout_s,
    )
    pool.connection_class = _cancel_safe(pool.connection_class)  # tcp, tls or unix, as the url says
    return redis.Redis(connection_pool=pool)
