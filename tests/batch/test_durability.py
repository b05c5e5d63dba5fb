"""Durability, on each store (SQLite, Redis): a gateway process killed (SIGKILL) mid-batch and
started again on the same store finishes the batch with every custom_id exactly once; two gateways
on one store share a batch without running a line's output twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from openai import AsyncOpenAI

from loadtest.overhead import free_port, wait_port
from tests.batch.conftest import batch_config, line, output_lines, start_batch, wait_final
from tests.conftest import KEY_ALL, sdk

ROOT = Path(__file__).resolve().parents[2]
N = 60


def _start(config: Path) -> subprocess.Popen[bytes]:
    log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)], cwd=ROOT, stdout=log, stderr=log
    )


@pytest.mark.timeout(120)
async def test_a_killed_gateway_resumes_the_batch_exactly_once(engine_factory, tmp_path, store_db) -> None:
    engine = await engine_factory(itl_s=0.01, output_tokens=15)
    port = free_port()
    raw = batch_config([engine], store_db, lease_s=1.0, initial_window=3, max_window=3)
    raw["server"].update(port=port, log_format="json")
    config = tmp_path / "gw.yaml"
    config.write_bytes(orjson.dumps(raw))  # JSON is YAML
    proc = _start(config)
    try:
        await asyncio.to_thread(wait_port, port)
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY_ALL, max_retries=2)
        batch = await start_batch(client, [line(f"r{i}", f"question {i}") for i in range(N)])
        while (b := await client.batches.retrieve(batch.id)).request_counts.completed < N // 4:
            await asyncio.sleep(0.02)
        proc.kill()  # SIGKILL: no clean stop, its leases stay until they expire
        proc.wait(timeout=10)
        killed_at = b.request_counts.completed
        assert killed_at < N
        proc = _start(config)
        await asyncio.to_thread(wait_port, port)
        done = await wait_final(client, batch.id, timeout=90)
        out = await output_lines(client, done.output_file_id)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (N, N, 0)
    counts = Counter(o["custom_id"] for o in out)
    assert sorted(counts) == sorted(f"r{i}" for i in range(N)) and set(counts.values()) == {1}
    # at most the lines in flight at the kill ran twice upstream; the output has each once
    assert N <= engine.stats.requests_total <= N + 3


async def test_two_gateways_share_one_batch(engine_factory, gateway_factory, store_db) -> None:
    engine = await engine_factory(itl_s=0.005, output_tokens=10)
    db = store_db
    first = await gateway_factory(batch_config([engine], db, max_window=4))
    second = await gateway_factory(batch_config([engine], db, max_window=4))
    client = sdk(first)
    batch = await start_batch(client, [line(f"r{i}") for i in range(80)])
    done = await wait_final(sdk(second), batch.id)
    assert done.status == "completed" and done.request_counts.completed == 80
    out = await output_lines(client, done.output_file_id)
    assert Counter(o["custom_id"] for o in out) == Counter(f"r{i}" for i in range(80))
    assert engine.stats.requests_total == 80  # no line ran twice: leases kept the two apart


async def test_a_clean_stop_gives_its_lines_back(engine_factory, gateway_factory, store_db) -> None:
    engine = await engine_factory(itl_s=0.02, output_tokens=20)
    db = store_db
    gw = await gateway_factory(batch_config([engine], db, lease_s=600, max_window=4))
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}") for i in range(30)])
    while engine.stats.requests_total < 2:
        await asyncio.sleep(0.01)
    await gw.stop()  # lines running are cancelled and their (10-minute) leases given back
    started = time.monotonic()
    again = await gateway_factory(batch_config([engine], db, lease_s=600, max_window=4))
    done = await wait_final(sdk(again), batch.id)
    assert done.status == "completed" and done.request_counts.completed == 30
    assert time.monotonic() - started < 30  # not waiting out a lease
