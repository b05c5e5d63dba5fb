"""Durable state of the Batch API: files, batches and per-line progress, in one SQLite file.

Every call runs on one thread of its own (never on the event loop), with one connection in WAL
mode, so the gateway processes of one machine share the file (`serve --workers N`, a restarted
process). The exactly-once rule lives here:

    claim     pending lines whose lease is free or expired get this owner and a lease (one
              BEGIN IMMEDIATE transaction: two processes never claim the same line at once);
    renew     the owner extends the leases of the lines it is running;
    complete  `state = done` with the output, only if the line is not done yet, and the batch's
              counters in the same transaction. A worker whose lease expired while another took
              the line over may finish second: its answer is dropped, so each custom_id has
              exactly one output line (the upstream may have run it twice; the output has it once).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

T = TypeVar("T")

PENDING, DONE = 0, 1
ACTIVE = ("in_progress", "finalizing", "cancelling")
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, content BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS files_team ON files(team);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, key_name TEXT NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, model TEXT NOT NULL,
    total INTEGER NOT NULL, completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT, error_file_id TEXT, obj TEXT NOT NULL,
    {", ".join(f"{t} INTEGER" for t in TIMESTAMPS)}
);
CREATE INDEX IF NOT EXISTS batches_team ON batches(team);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, grp TEXT NOT NULL,
    body BLOB NOT NULL, state INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL NOT NULL DEFAULT 0,
    ok INTEGER, result BLOB, PRIMARY KEY (batch_id, idx)
);
CREATE INDEX IF NOT EXISTS lines_todo ON lines(batch_id, state, grp, idx);
"""


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at BEGIN (IMMEDIATE) so two writers never interleave;
    committed when the block ends, rolled back if it raises (a cancelled stop included)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@dataclass(slots=True)
class Line:
    batch_id: str
    idx: int
    custom_id: str
    grp: str
    body: bytes


@dataclass(slots=True)
class Progress:
    pending: int  # not done, not leased (or the lease expired)
    leased: int  # not done, leased by some worker now
    done: int


class BatchStore(Protocol):
    """What the Batch API needs of a store (SqliteStore here, RedisStore in redis_store.py); both
    keep the same semantics: team scoping, newest-first paging, leases, exactly-once `complete`."""

    def present(self) -> bool: ...
    async def close(self) -> None: ...
    async def put_file(self, row: dict[str, Any], content: bytes) -> None: ...
    async def get_file(self, team: str, file_id: str) -> dict[str, Any] | None: ...
    async def list_files(
        self, team: str, purpose: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]: ...
    async def file_content(self, team: str, file_id: str) -> bytes | None: ...
    async def delete_file(self, team: str, file_id: str) -> bool: ...
    async def create_batch(self, row: dict[str, Any], lines: list[Line]) -> None: ...
    async def get_batch(self, batch_id: str, team: str | None = None) -> dict[str, Any] | None: ...
    async def list_batches(self, team: str, after: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def active_batches(self) -> list[dict[str, Any]]: ...
    async def set_status(
        self, batch_id: str, status: str, when: Iterable[str], extra: dict[str, Any] | None = None
    ) -> bool: ...
    async def claim(self, batch_id: str, owner: str, n: int, lease_s: float) -> list[Line]: ...
    async def renew(self, batch_id: str, idxs: list[int], owner: str, lease_s: float) -> None: ...
    async def release(self, batch_id: str, idxs: list[int], owner: str, after_s: float = 0.0) -> None: ...
    async def complete(self, batch_id: str, idx: int, ok: bool, result: bytes, tokens: tuple[int, int]) -> bool: ...
    async def fail_pending(self, batch_id: str, result_of: Callable[[str], bytes]) -> int: ...
    async def progress(self, batch_id: str) -> Progress: ...
    async def results(self, batch_id: str) -> list[tuple[bool, bytes]]: ...


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batch-store")
        self._db: sqlite3.Connection | None = None

    async def _do(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def present(self) -> bool:
        """The file exists (the runner does not create it: a gateway that never served the Batch
        API leaves no file behind)."""
        return self._db is not None or self.path == ":memory:" or Path(self.path).exists()

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._do(close)
        self._pool.shutdown(wait=False)

    # -- files ---------------------------------------------------------------------------------------
    async def put_file(self, row: dict[str, Any], content: bytes) -> None:
        def put() -> None:
            self._conn().execute(
                "INSERT OR REPLACE INTO files (id, team, purpose, filename, bytes, created_at, content) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["team"], row["purpose"], row["filename"], len(content), row["created_at"], content),
            )

        await self._do(put)

    async def get_file(self, team: str, file_id: str) -> dict[str, Any] | None:
        rows = await self._do(self._files, "team = ? AND id = ?", (team, file_id), "", 1)
        return rows[0] if rows else None

    async def list_files(self, team: str, purpose: str | None, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first; `after`: the id the previous page ended with."""
        where, args = "team = ?", [team]
        if purpose:
            where += " AND purpose = ?"
            args.append(purpose)
        if after:
            where += " AND rowid < (SELECT rowid FROM files WHERE id = ? AND team = ?)"
            args += [after, team]
        return await self._do(self._files, where, tuple(args), "ORDER BY rowid DESC", limit)

    def _files(self, where: str, args: tuple[Any, ...], order: str, limit: int) -> list[dict[str, Any]]:
        cur = self._conn().execute(
            f"SELECT id, team, purpose, filename, bytes, created_at FROM files WHERE {where} {order} LIMIT ?",
            (*args, limit),
        )
        keys = ("id", "team", "purpose", "filename", "bytes", "created_at")
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    async def file_content(self, team: str, file_id: str) -> bytes | None:
        def read() -> bytes | None:
            r = self._conn().execute("SELECT content FROM files WHERE team = ? AND id = ?", (team, file_id)).fetchone()
            return bytes(r[0]) if r else None

        return await self._do(read)

    async def delete_file(self, team: str, file_id: str) -> bool:
        def delete() -> bool:
            cur = self._conn().execute("DELETE FROM files WHERE team = ? AND id = ?", (team, file_id))
            return cur.rowcount > 0

        return await self._do(delete)

    # -- batches -------------------------------------------------------------------------------------
    async def create_batch(self, row: dict[str, Any], lines: list[Line]) -> None:
        """The batch and all its lines, in one transaction."""

        def create() -> None:
            db = self._conn()
            with _immediate(db):
                db.execute(
                    "INSERT INTO batches (id, team, key_name, status, created_at, expires_at, model, total, "
                    "in_progress_at, failed_at, obj) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row["id"],
                        row["team"],
                        row["key_name"],
                        row["status"],
                        row["created_at"],
                        row["expires_at"],
                        row["model"],
                        len(lines),
                        row.get("in_progress_at"),
                        row.get("failed_at"),
                        orjson.dumps(row["obj"]).decode(),
                    ),
                )
                db.executemany(
                    "INSERT INTO lines (batch_id, idx, custom_id, grp, body) VALUES (?, ?, ?, ?, ?)",
                    ((ln.batch_id, ln.idx, ln.custom_id, ln.grp, ln.body) for ln in lines),
                )

        await self._do(create)

    _BATCH_COLS = (
        "id, team, key_name, status, created_at, expires_at, model, total, completed, failed, prompt_tokens, "
        "completion_tokens, output_file_id, error_file_id, obj, " + ", ".join(TIMESTAMPS)
    )

    def _batches(self, where: str, args: tuple[Any, ...], tail: str = "") -> list[dict[str, Any]]:
        cur = self._conn().execute(f"SELECT {self._BATCH_COLS} FROM batches WHERE {where} {tail}", args)
        keys = [c.strip() for c in self._BATCH_COLS.split(",")]
        out = []
        for r in cur.fetchall():
            row = dict(zip(keys, r))
            row["obj"] = orjson.loads(row["obj"])
            out.append(row)
        return out

    async def get_batch(self, batch_id: str, team: str | None = None) -> dict[str, Any] | None:
        where, args = ("id = ?", (batch_id,)) if team is None else ("id = ? AND team = ?", (batch_id, team))
        rows = await self._do(self._batches, where, args)
        return rows[0] if rows else None

    async def list_batches(self, team: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        where, args = "team = ?", [team]
        if after:
            where += " AND rowid < (SELECT rowid FROM batches WHERE id = ? AND team = ?)"
            args += [after, team]
        return await self._do(self._batches, where, (*args, limit), "ORDER BY rowid DESC LIMIT ?")

    async def active_batches(self) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in ACTIVE)
        return await self._do(self._batches, f"status IN ({marks})", ACTIVE, "ORDER BY rowid")

    async def set_status(
        self, batch_id: str, status: str, when: Iterable[str], extra: dict[str, Any] | None = None
    ) -> bool:
        """Move the batch to `status` (its `<status>_at` stamped) if it is in one of `when`; True
        when this call made the move (so exactly one worker finalizes, expires ...)."""
        fields = {f"{status}_at": int(time.time())} if f"{status}_at" in TIMESTAMPS else {}
        fields.update(extra or {})
        when = tuple(when)

        def update() -> bool:
            sets = ", ".join(["status = ?"] + [f"{k} = ?" for k in fields])
            marks = ", ".join("?" for _ in when)
            cur = self._conn().execute(
                f"UPDATE batches SET {sets} WHERE id = ? AND status IN ({marks})",
                (status, *fields.values(), batch_id, *when),
            )
            return cur.rowcount > 0

        return await self._do(update)

    # -- lines ---------------------------------------------------------------------------------------
    async def claim(self, batch_id: str, owner: str, n: int, lease_s: float) -> list[Line]:
        """Up to `n` pending lines whose lease is free or expired, grouped by prefix (grp) then in
        file order, leased to `owner`."""

        def claim() -> list[Line]:
            db = self._conn()
            now = time.time()
            with _immediate(db):
                rows = db.execute(
                    "SELECT idx, custom_id, grp, body FROM lines WHERE batch_id = ? AND state = 0 "
                    "AND lease_until < ? ORDER BY grp, idx LIMIT ?",
                    (batch_id, now, n),
                ).fetchall()
                db.executemany(
                    "UPDATE lines SET owner = ?, lease_until = ? WHERE batch_id = ? AND idx = ?",
                    ((owner, now + lease_s, batch_id, r[0]) for r in rows),
                )
            return [Line(batch_id, r[0], r[1], r[2], bytes(r[3])) for r in rows]

        return await self._do(claim)

    async def renew(self, batch_id: str, idxs: list[int], owner: str, lease_s: float) -> None:
        def renew() -> None:
            until = time.time() + lease_s
            self._conn().executemany(
                "UPDATE lines SET lease_until = ? WHERE batch_id = ? AND idx = ? AND owner = ? AND state = 0",
                ((until, batch_id, i, owner) for i in idxs),
            )

        await self._do(renew)

    async def release(self, batch_id: str, idxs: list[int], owner: str, after_s: float = 0.0) -> None:
        """Give lines back (not run): claimable again after `after_s`."""

        def release() -> None:
            until = time.time() + after_s if after_s > 0 else 0.0
            self._conn().executemany(
                "UPDATE lines SET lease_until = ?, owner = NULL WHERE batch_id = ? AND idx = ? AND owner = ? "
                "AND state = 0",
                ((until, batch_id, i, owner) for i in idxs),
            )

        await self._do(release)

    async def complete(self, batch_id: str, idx: int, ok: bool, result: bytes, tokens: tuple[int, int]) -> bool:
        """The line's output, once: False (and nothing written) when it was already done."""

        def complete() -> bool:
            db = self._conn()
            with _immediate(db):
                cur = db.execute(
                    "UPDATE lines SET state = 1, ok = ?, result = ?, owner = NULL WHERE batch_id = ? AND idx = ? "
                    "AND state = 0",
                    (int(ok), result, batch_id, idx),
                )
                won = cur.rowcount > 0
                if won:
                    db.execute(
                        "UPDATE batches SET completed = completed + ?, failed = failed + ?, "
                        "prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ? WHERE id = ?",
                        (int(ok), int(not ok), tokens[0], tokens[1], batch_id),
                    )
            return won

        return await self._do(complete)

    async def fail_pending(self, batch_id: str, result_of: Callable[[str], bytes]) -> int:
        """Every line not done yet becomes a failed line (`result_of(custom_id)`): an expired batch."""

        def fail() -> int:
            db = self._conn()
            with _immediate(db):
                rows = db.execute(
                    "SELECT idx, custom_id FROM lines WHERE batch_id = ? AND state = 0", (batch_id,)
                ).fetchall()
                db.executemany(
                    "UPDATE lines SET state = 1, ok = 0, result = ?, owner = NULL WHERE batch_id = ? AND idx = ?",
                    ((result_of(cid), batch_id, idx) for idx, cid in rows),
                )
                db.execute("UPDATE batches SET failed = failed + ? WHERE id = ?", (len(rows), batch_id))
            return len(rows)

        return await self._do(fail)

    async def progress(self, batch_id: str) -> Progress:
        def count() -> Progress:
            now = time.time()
            r = (
                self._conn()
                .execute(
                    "SELECT SUM(state = 0 AND lease_until < ?), SUM(state = 0 AND lease_until >= ?), SUM(state = 1) "
                    "FROM lines WHERE batch_id = ?",
                    (now, now, batch_id),
                )
                .fetchone()
            )
            return Progress(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0))

        return await self._do(count)

    async def results(self, batch_id: str) -> list[tuple[bool, bytes]]:
        """(ok, output line) of every done line, in file order."""

        def read() -> list[tuple[bool, bytes]]:
            cur = self._conn().execute(
                "SELECT ok, result FROM lines WHERE batch_id = ? AND state = 1 ORDER BY idx", (batch_id,)
            )
            return [(bool(ok), bytes(res)) for ok, res in cur.fetchall()]

        return await self._do(read)
