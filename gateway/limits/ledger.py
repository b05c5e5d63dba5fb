"""Durable spend for the embedded default (no Redis): a SQLite file, `budgets.sqlite_path`.

Settled spend is queued in memory and written in one transaction every `FLUSH_S` (and at shutdown)
in an executor, never on the event loop; a crash loses at most that much. At start every row is read
back into the in-memory store, so a restart keeps the spend of the current periods.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.limits.store import BudgetSettle, MemoryStore, Spend

FLUSH_S = 0.5

_SCHEMA = """CREATE TABLE IF NOT EXISTS spend (
  key TEXT NOT NULL, model TEXT NOT NULL, usd_nano INTEGER NOT NULL DEFAULT 0,
  prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
  requests INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key, model))"""
_UPSERT = """INSERT INTO spend (key, model, usd_nano, prompt_tokens, completion_tokens, requests)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, model) DO UPDATE SET
usd_nano = usd_nano + excluded.usd_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
completion_tokens = completion_tokens + excluded.completion_tokens, requests = requests + excluded.requests"""


class Ledger:
    """One per SQLite file and in-memory store; a hot reload hands it (with the store) to the new
    gateway, so both gateways' limits phases use it while the old one drains: started once (the file
    read once), stopped (and flushed) when its last user stops."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._pending: dict[tuple[str, str], list[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    def record(self, g: BudgetSettle) -> None:
        row = self._pending.setdefault((g.key, g.model), [0, 0, 0, 0])
        row[0] += g.actual
        row[1] += g.prompt_tokens
        row[2] += g.completion_tokens
        row[3] += 1

    async def start(self, store: MemoryStore) -> None:
        self._users += 1
        if self._users > 1:  # handed over by a reload: the store already holds the spend
            return
        loop = asyncio.get_running_loop()
        for key, spend in (await loop.run_in_executor(None, self._read)).items():
            store.load(key, spend)
        self._task = loop.create_task(self._flush_loop())

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0:  # the other gateway still writes through it
            await self.flush()
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, {}
        await asyncio.get_running_loop().run_in_executor(None, self._write, rows)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5)
        db.execute(_SCHEMA)
        return db

    def _read(self) -> dict[str, Spend]:
        db = self._connect()
        try:
            out: dict[str, Spend] = {}
            for key, model, usd, p, c, n in db.execute(
                "SELECT key, model, usd_nano, prompt_tokens, completion_tokens, requests FROM spend"
            ):
                s = out.setdefault(key, Spend())
                s.spent += usd
                s.by_model[model] = {"usd_nano": usd, "prompt_tokens": p, "completion_tokens": c, "requests": n}
            return out
        finally:
            db.close()

    def _write(self, rows: dict[tuple[str, str], list[int]]) -> None:
        db = self._connect()
        try:
            with db:
                db.executemany(_UPSERT, [(k, m, *v) for (k, m), v in rows.items()])
        finally:
            db.close()
