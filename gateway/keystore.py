"""API keys created through the admin API: stored hashed (SHA-256 only), in Redis when `[redis]` is
configured, else in an embedded SQLite file (`keystore.path`, default var/switchyard.db).

Authentication stays a dict lookup on the hot path: `KeyStoreSync` loads the active stored keys into
the gateway's KeyTable at start and every `keystore.refresh_s`, so a key created or revoked through
another worker (or gateway sharing the store) takes effect here within that interval; on the worker
that served the admin call it takes effect at once. Keys from the config file keep working beside
them. SQLite runs in an executor (never blocking the event loop).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.keys import Principal
from gateway.ops_config import KeyStoreConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.runtime import Gateway


@dataclass(frozen=True)
class StoredKey:
    id: str
    name: str
    team: str
    models: list[str]
    sha256: str
    created_at: float
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API shows: never the hash's full value, never the key."""
        d = asdict(self)
        d["sha256_prefix"] = d.pop("sha256")[:12]
        return d


class KeyStore(Protocol):
    async def add(self, key: StoredKey) -> bool: ...  # False: the name is taken
    async def all(self) -> list[StoredKey]: ...
    async def revoke(self, ident: str) -> StoredKey | None: ...  # by id or name
    async def close(self) -> None: ...


def new_record(name: str, team: str, models: list[str], sha256: str) -> StoredKey:
    return StoredKey(uuid.uuid4().hex[:16], name, team, models, sha256, time.time())


class SqliteKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5)
        db.execute(
            "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, team TEXT NOT NULL,"
            " models TEXT NOT NULL, sha256 TEXT UNIQUE NOT NULL, created_at REAL NOT NULL, revoked_at REAL)"
        )
        return db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _add(self, key: StoredKey) -> bool:
        db = self._connect(create=True)
        assert db is not None
        try:
            with db:
                db.execute(
                    "INSERT INTO api_keys VALUES (?,?,?,?,?,?,?)",
                    (key.id, key.name, key.team, orjson.dumps(key.models).decode(), key.sha256, key.created_at, None),
                )
            return True
        except sqlite3.IntegrityError:
            return False
        finally:
            db.close()

    def _all(self) -> list[StoredKey]:
        db = self._connect(create=False)
        if db is None:
            return []
        try:
            rows = db.execute("SELECT id, name, team, models, sha256, created_at, revoked_at FROM api_keys").fetchall()
        finally:
            db.close()
        return [StoredKey(r[0], r[1], r[2], orjson.loads(r[3]), r[4], r[5], r[6]) for r in rows]

    def _revoke(self, ident: str) -> StoredKey | None:
        db = self._connect(create=False)
        if db is None:
            return None
        try:
            with db:
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                    (time.time(), ident, ident),
                )
            row = db.execute(
                "SELECT id, name, team, models, sha256, created_at, revoked_at FROM api_keys WHERE id = ? OR name = ?",
                (ident, ident),
            ).fetchone()
        finally:
            db.close()
        return None if row is None else StoredKey(row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5], row[6])

    async def add(self, key: StoredKey) -> bool:
        return await self._run(self._add, key)

    async def all(self) -> list[StoredKey]:
        return await self._run(self._all)

    async def revoke(self, ident: str) -> StoredKey | None:
        return await self._run(self._revoke, ident)

    async def close(self) -> None:
        return None


class RedisKeyStore:
    """One hash `{prefix}apikeys` (id -> JSON record) and one `{prefix}apikey_names` (name -> id)."""

    def __init__(self, redis: "Redis", prefix: str) -> None:
        self.redis = redis
        self.records = prefix + "apikeys"
        self.names = prefix + "apikey_names"

    async def add(self, key: StoredKey) -> bool:
        if not await self.redis.hsetnx(self.names, key.name, key.id):
            return False
        await self.redis.hset(self.records, key.id, orjson.dumps(asdict(key)))
        return True

    async def all(self) -> list[StoredKey]:
        return [StoredKey(**orjson.loads(v)) for v in (await self.redis.hgetall(self.records)).values()]

    async def revoke(self, ident: str) -> StoredKey | None:
        found = await self.redis.hget(self.names, ident)
        key_id = found.decode() if isinstance(found, bytes) else (found or ident)
        raw = await self.redis.hget(self.records, key_id)
        if raw is None:
            return None
        record = StoredKey(**orjson.loads(raw))
        if record.revoked_at is None:
            record = StoredKey(**{**asdict(record), "revoked_at": time.time()})
            await self.redis.hset(self.records, key_id, orjson.dumps(asdict(record)))
        return record

    async def close(self) -> None:
        return None  # the Redis client belongs to the Gateway


class KeyStoreSync:
    """Owns the gateway's KeyStore and keeps its KeyTable's stored keys current."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        cfg: KeyStoreConfig = gateway.config.keystore
        self.refresh_s = cfg.refresh_s
        if gateway.redis is not None and gateway.config.redis is not None:
            self.store: KeyStore = RedisKeyStore(gateway.redis, gateway.config.redis.key_prefix)
        else:
            self.store = SqliteKeyStore(os.path.expanduser(cfg.path))
        self._task: asyncio.Task[None] | None = None
        self._local_changes = 0
        # name -> team of every stored key, revoked ones too: its spend lives under its team
        # (gateway/limits/usage.py reads it through team_of)
        self.teams: dict[str, str] = {}

    async def refresh(self) -> None:
        changes = self._local_changes
        records = await self.store.all()
        active = {k.sha256: Principal(k.name, k.team, frozenset(k.models)) for k in records if k.revoked_at is None}
        self.teams = {**self.teams, **{k.name: k.team for k in records}}
        if changes == self._local_changes:  # else this read may predate a key just created/revoked here
            self.gateway.keys.set_stored(active)

    async def team_of(self, name: str) -> str | None:
        """The team of a stored key (active or revoked), or None when no stored key has that name.
        A key created through another worker since the last refresh is read from the store."""
        team = self.teams.get(name)
        if team is None:
            for k in await self.store.all():
                if k.name == name:
                    self.teams = {**self.teams, k.name: k.team}
                    return k.team
        return team

    def created(self, digest: str, principal: Principal) -> None:
        """A key was stored through this gateway: usable at once."""
        self._local_changes += 1
        self.teams = {**self.teams, principal.key_name: principal.team}
        self.gateway.keys.add_stored(digest, principal)

    def revoked(self, digest: str) -> None:
        self._local_changes += 1
        self.gateway.keys.remove_stored(digest)

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception:
            self.gateway.log.exception("keystore_unavailable")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="switchyard-keystore-sync")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as e:  # a Redis hiccup keeps the last known keys
                self.gateway.log.warning("keystore_refresh_failed", error=str(e))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.store.close()
