"""Where exact-cache entries live: this process's memory (LRU bounded by bytes) or Redis (shared
by every gateway process using the same `[redis]`, expiring with Redis TTLs).

An entry is the answer's JSON body (a complete non-streamed response; streamed answers are stored
in that form, see replay.py) under `namespace|hash` (keys.py), so a purge can pick entries by
model, team and scope kind.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from redis.asyncio import Redis


def _matches(ns: str, model: str | None, team: str | None, scope: str | None) -> bool:
    m, t, s = _split(ns)
    return (model is None or m == model) and (team is None or t == team) and (scope is None or s == scope)


def _split(ns: str) -> tuple[str, str, str]:
    # namespace() escaped glob characters with backslashes; undo that for comparisons.
    parts: list[str] = []
    cur, esc = "", False
    for ch in ns:
        if esc:
            cur, esc = cur + ch, False
        elif ch == "\\":
            esc = True
        elif ch == "|" and len(parts) < 2:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return (parts + ["", "", ""])[0], (parts + ["", ""])[1], (parts + [""])[2]


class Store(Protocol):
    async def get(self, ns: str, key: str) -> bytes | None: ...

    async def put(self, ns: str, key: str, body: bytes, ttl_s: float) -> None: ...

    async def purge(self, model: str | None, team: str | None, scope: str | None) -> int: ...

    def size(self) -> tuple[int, int]: ...  # (entries, bytes); (-1, -1) when unknown


class MemoryStore:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, ns: str, key: str) -> bytes | None:
        item = self._entries.get((ns, key))
        if item is None:
            return None
        if item[0] <= self.clock():
            self._drop((ns, key))
            return None
        self._entries.move_to_end((ns, key))
        return item[1]

    async def put(self, ns: str, key: str, body: bytes, ttl_s: float) -> None:
        if len(body) > self.max_bytes:
            return
        self._drop((ns, key))
        self._entries[(ns, key)] = (self.clock() + ttl_s, body)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def purge(self, model: str | None, team: str | None, scope: str | None) -> int:
        doomed = [k for k in self._entries if _matches(k[0], model, team, scope)]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def size(self) -> tuple[int, int]:
        return len(self._entries), self.bytes

    def _drop(self, k: tuple[str, str]) -> None:
        item = self._entries.pop(k, None)
        if item is not None:
            self.bytes -= len(item[1])


class RedisStore:
    """Keys `{prefix}cache:{namespace}|{hash}`; values the body; Redis expires them."""

    def __init__(self, redis: "Redis", prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix + "cache:"

    async def get(self, ns: str, key: str) -> bytes | None:
        return cast("bytes | None", await self.redis.get(f"{self.prefix}{ns}|{key}"))

    async def put(self, ns: str, key: str, body: bytes, ttl_s: float) -> None:
        await self.redis.set(f"{self.prefix}{ns}|{key}", body, px=max(1, int(ttl_s * 1000)))

    async def purge(self, model: str | None, team: str | None, scope: str | None) -> int:
        from gateway.cache.keys import namespace

        glob = lambda v: "*" if v is None else namespace(v, "", "").split("|")[0]  # noqa: E731
        escape: dict[str, str | int | None] = {c: chr(92) + c for c in "*?[]"}
        pattern = f"{self.prefix.translate(str.maketrans(escape))}{glob(model)}|{glob(team)}|{scope or '*'}|*"
        n = 0
        batch: list[bytes] = []
        async for k in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(k)
            if len(batch) >= 500:
                n += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            n += await self.redis.unlink(*batch)
        return n

    def size(self) -> tuple[int, int]:
        return -1, -1
