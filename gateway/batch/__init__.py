"""The OpenAI Batch API on the gateway's own engines, at the lowest priority.

    config.py     the `[batch]` schema
    validate.py   input files: JSONL lines checked one by one, located errors
    objects.py    file / batch objects and output / error lines in OpenAI's shapes
    store.py      files, batches, per-line progress (SQLite; leases, exactly-once output), and
                  the `BatchStore` protocol; redis_store.py the same in Redis (`store = "redis"`)
    window.py     AIMD: how many lines of a batch are outstanding at once
    runner.py     runs lines through pipeline.run_internal as class `background`; finalizes,
                  expires, cancels; resumes whatever is in the store at start
    files_api.py / batches_api.py   the HTTP endpoints (/v1/files, /v1/batches)
    metrics.py    lines pending / outstanding / finished, tokens per team

`BatchService` is on the Gateway as `gw.batch` (None when `[batch].enabled` is false). It starts with
the Gateway (the runner resumes in-progress batches) and stops with it (running lines are cancelled
and their leases given back). A reload retires the old gateway's runner (it claims no more lines;
its running ones finish) and the new gateway's runner takes over through the same store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.batch.config import BatchConfig
from gateway.batch.metrics import BatchMetrics
from gateway.batch.store import BatchStore, SqliteStore

if TYPE_CHECKING:
    from gateway.batch.runner import BatchRunner
    from gateway.runtime import Gateway

SQLITE = "sqlite:///"


class BatchService:
    def __init__(self, gw: "Gateway", cfg: BatchConfig) -> None:
        from gateway.batch.runner import BatchRunner  # the runner imports the pipeline

        self.gw = gw
        self.cfg = cfg
        self.metrics: BatchMetrics = gw.metrics.extension("batch", BatchMetrics)
        self.store: BatchStore = build_store(gw, cfg)
        self.runner: BatchRunner = BatchRunner(self)

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.store.close()


def build_store(gw: "Gateway", cfg: BatchConfig) -> BatchStore:
    """`[batch].store`: sqlite:///<path>, or "redis" (the gateway's [redis] client and key prefix)."""
    if cfg.store == "redis":
        from gateway.batch.redis_store import RedisStore

        if gw.redis is None or gw.config.redis is None:
            raise ValueError("[batch] store = 'redis' needs the [redis] section")
        return RedisStore(gw.redis, gw.config.redis.key_prefix + "batch:")
    return SqliteStore(cfg.store.removeprefix(SQLITE))


def build_batch(gw: "Gateway") -> BatchService | None:
    cfg = gw.config.batch
    return BatchService(gw, cfg) if cfg.enabled else None


__all__ = ["BatchConfig", "BatchService", "build_batch"]
