"""The one Redis client of a gateway process, built from `[redis]` in the config.

redis-py's default asyncio pool raises MaxConnectionsError past its limit instead of waiting, so a
BlockingConnectionPool is used: callers wait up to `timeout_s` for a connection, and every command
is bounded by the same socket timeout, so no request hangs on a dead Redis.
"""

from __future__ import annotations

import redis.asyncio as redis

from gateway.config import RedisConfig


def make_redis(config: RedisConfig) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=config.timeout_s,
        socket_timeout=config.timeout_s,
        socket_connect_timeout=config.timeout_s,
    )
    return redis.Redis(connection_pool=pool)
