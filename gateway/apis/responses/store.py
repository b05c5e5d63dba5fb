"""State of the Responses API: stored responses, for `previous_response_id`, GET and DELETE.

Per response id the store keeps one JSON record: its owner (team + key, `gateway.apis.base.owner_of`),
the deployment that served it (pass-through affinity), the response object (for GET) and the whole
conversation as chat messages (history, this input, the answer; never the `instructions`), so a
follow-up rebuilds its history with one read. That costs space (each turn repeats its history) and
buys one read per request; every store bounds it by a TTL, the memory one also by bytes and count.

A record read by another owner is treated as unknown (None / False): ids never leak across teams
or keys. `make_store(config, redis=...)` builds the configured kind:

    [responses]
    store = "memory"        # "memory" | "sqlite" | "redis"
    ttl_s = 86400           # a stored response lives this long (every kind)
    max_bytes = 268435456   # memory: oldest evicted past this many bytes of records ...
    max_items = 100000      # ... or this many records
    sqlite_path = "responses.sqlite"   # sqlite: the file
    redis_prefix = "sy:resp:"          # redis: key prefix (the gateway's [redis] client)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(slots=True)
class StoredResponse:
    id: str
    owner: str
    created_at: float
    deployment: str | None  # the deployment that served it (backend/model name), for affinity
    response: dict[str, Any]  # the response object, as GET /v1/responses/{id} returns it
    conversation: list[dict[str, Any]]  # chat messages up to and including the answer
    native: bool = False  # served by a backend's own /v1/responses (pass-through): no conversation here

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "owner": self.owner,
                "created_at": self.created_at,
                "deployment": self.deployment,
                "response": self.response,
                "conversation": self.conversation,
                "native": self.native,
            }
        )

    @classmethod
    def loads(cls, resp_id: str, raw: bytes) -> StoredResponse:
        d = orjson.loads(raw)
        return cls(
            resp_id,
            d["owner"],
            d["created_at"],
            d.get("deployment"),
            d["response"],
            d["conversation"],
            bool(d.get("native")),
        )


class ResponseStore(Protocol):
    async def put(self, record: StoredResponse) -> None: ...

    async def get(self, resp_id: str, owner: str) -> StoredResponse | None: ...

    async def delete(self, resp_id: str, owner: str) -> bool: ...

    async def close(self) -> None: ...


def _owned(resp_id: str, raw: bytes | None, owner: str) -> StoredResponse | None:
    if raw is None:
        return None
    rec = StoredResponse.loads(resp_id, raw)
    return rec if rec.owner == owner else None


class MemoryResponseStore:
    """In-process, LRU by insertion: expired records go first, then the oldest past max_bytes/max_items."""

    def __init__(
        self,
        ttl_s: float = 86400.0,
        max_bytes: int = 256 << 20,
        max_items: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_bytes, self.max_items, self._clock = ttl_s, max_bytes, max_items, clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, record: StoredResponse) -> None:
        raw = record.dumps()
        if len(raw) > self.max_bytes:
            return  # larger than the whole store: not kept (a follow-up gets 404 as for an expired one)
        self._drop(record.id)
        now = self._clock()
        self._items[record.id] = (now + self.ttl_s, raw)
        self.bytes += len(raw)
        while self._items:
            oldest_id, (expires, oldest) = next(iter(self._items.items()))
            if expires > now and self.bytes <= self.max_bytes and len(self._items) <= self.max_items:
                break
            self._drop(oldest_id)

    async def get(self, resp_id: str, owner: str) -> StoredResponse | None:
        entry = self._items.get(resp_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._drop(resp_id)
            return None
        return _owned(resp_id, entry[1], owner)

    async def delete(self, resp_id: str, owner: str) -> bool:
        if await self.get(resp_id, owner) is None:
            return False
        self._drop(resp_id)
        return True

    async def close(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _drop(self, resp_id: str) -> None:
        entry = self._items.pop(resp_id, None)
        if entry is not None:
            self.bytes -= len(entry[1])


class SqliteResponseStore:
    """One SQLite file; every call runs in a worker thread (one connection, one lock)."""

    PURGE_EVERY = 256  # puts between deletions of expired rows

    def __init__(self, path: str, ttl_s: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
            "expires REAL NOT NULL, data BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)")
        self._puts = 0

    def _run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            return fn()

    async def put(self, record: StoredResponse) -> None:
        raw, now = record.dumps(), self._clock()
        self._puts += 1
        purge = self._puts % self.PURGE_EVERY == 0

        def write() -> None:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, owner, expires, data) VALUES (?, ?, ?, ?)",
                (record.id, record.owner, now + self.ttl_s, raw),
            )
            if purge:
                self._db.execute("DELETE FROM responses WHERE expires <= ?", (now,))

        await asyncio.to_thread(self._run, write)

    async def get(self, resp_id: str, owner: str) -> StoredResponse | None:
        now = self._clock()

        def read() -> Any:
            return self._db.execute(
                "SELECT data FROM responses WHERE id = ? AND owner = ? AND expires > ?", (resp_id, owner, now)
            ).fetchone()

        row = await asyncio.to_thread(self._run, read)
        return None if row is None else StoredResponse.loads(resp_id, bytes(row[0]))

    async def delete(self, resp_id: str, owner: str) -> bool:
        now = self._clock()

        def remove() -> int:
            cur = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND owner = ? AND expires > ?", (resp_id, owner, now)
            )
            return cur.rowcount

        return bool(await asyncio.to_thread(self._run, remove))

    async def close(self) -> None:
        await asyncio.to_thread(self._run, self._db.close)


# Delete only when the record's owner matches (one round trip, no race between the check and the delete).
_DELETE_OWNED = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if ok and rec['owner'] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


class RedisResponseStore:
    """Records as Redis strings with the TTL as expiry; shared by every gateway process."""

    def __init__(self, client: Any, ttl_s: float = 86400.0, prefix: str = "sy:resp:") -> None:
        self._r, self.ttl_s, self.prefix = client, ttl_s, prefix
        self._delete = client.register_script(_DELETE_OWNED)

    async def put(self, record: StoredResponse) -> None:
        await self._r.set(self.prefix + record.id, record.dumps(), px=max(1, int(self.ttl_s * 1000)))

    async def get(self, resp_id: str, owner: str) -> StoredResponse | None:
        return _owned(resp_id, await self._r.get(self.prefix + resp_id), owner)

    async def delete(self, resp_id: str, owner: str) -> bool:
        return bool(await self._delete(keys=[self.prefix + resp_id], args=[owner]))

    async def close(self) -> None:
        return None  # the client belongs to the gateway


class ResponsesConfig(BaseModel):
    """The `[responses]` config section (proposed; strict like every section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["memory", "sqlite", "redis"] = "memory"
    ttl_s: float = Field(default=86400.0, gt=0, description="how long a stored response can be read back")
    max_bytes: int = Field(default=256 << 20, gt=0, description="memory store: bytes of records kept")
    max_items: int = Field(default=100_000, gt=0, description="memory store: records kept")
    sqlite_path: str | None = Field(default=None, description="sqlite store: the database file")
    redis_prefix: str = Field(default="sy:resp:", description="redis store: key prefix")

    @model_validator(mode="after")
    def _check(self) -> ResponsesConfig:
        if self.store == "sqlite" and not self.sqlite_path:
            raise ValueError("responses.store = 'sqlite' needs responses.sqlite_path")
        return self


def make_store(config: ResponsesConfig | None = None, redis: Any = None) -> ResponseStore:
    cfg = config or ResponsesConfig()
    if cfg.store == "sqlite":
        assert cfg.sqlite_path is not None
        return SqliteResponseStore(cfg.sqlite_path, cfg.ttl_s)
    if cfg.store == "redis":
        if redis is None:
            raise ValueError("responses.store = 'redis' needs the [redis] section")
        return RedisResponseStore(redis, cfg.ttl_s, cfg.redis_prefix)
    return MemoryResponseStore(cfg.ttl_s, cfg.max_bytes, cfg.max_items)
