"""A config reload mid-batch: the old gateway's runner claims no more lines (its running ones
finish), the new gateway's runner takes the batch over through the same store, no line runs twice
and the old gateway drains and stops."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson

from gateway.reload import Reloader
from gateway.server import start_gateway
from tests.batch.conftest import batch_config, line, output_lines, start_batch, wait_final
from tests.conftest import sdk, to_config


async def test_a_reload_hands_the_batch_to_the_new_gateway(engine_factory, tmp_path: Path, store_db: str) -> None:
    engine = await engine_factory(itl_s=0.01, output_tokens=10)
    raw = batch_config([engine], store_db, max_window=4)
    path = tmp_path / "gw.yaml"
    path.write_bytes(orjson.dumps(raw))
    gw = await start_gateway(to_config(raw), port=0, config_path=str(path))
    try:
        client = sdk(gw)
        old = gw.current
        batch = await start_batch(client, [line(f"r{i}") for i in range(60)])
        while (await client.batches.retrieve(batch.id)).request_counts.completed < 10:
            await asyncio.sleep(0.02)
        assert isinstance(gw.reloader, Reloader)
        new = await gw.reloader.reload("test")
        assert new is not old and old.batch is not None and old.batch.runner.retired
        done = await wait_final(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 60
        out = await output_lines(client, done.output_file_id)
        assert Counter(o["custom_id"] for o in out) == Counter(f"r{i}" for i in range(60))
        assert engine.stats.requests_total == 60  # no line ran on both gateways
        for _ in range(100):  # the old gateway drains (its batch lines count) and is stopped
            if old.requests_in_flight == 0 and old.prober._task is None:
                break
            await asyncio.sleep(0.05)
        assert old.requests_in_flight == 0 and not old.batch.runner.jobs
    finally:
        await gw.stop()
