"""Completion windows: lines not run by the deadline get batch_expired; with `spill = "remote"` a
batch whose observed rate cannot finish on local engines in time also uses the model's remote
deployments, which otherwise never see a batch line."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.batch.conftest import batch_config, line, output_lines, start_batch, upload, wait_final
from tests.conftest import sdk


def local_and_remote(local: Any, remote: Any, db: str, **batch: Any) -> dict[str, Any]:
    raw = batch_config([local, remote], db, **batch)
    raw["backends"][0]["max_concurrency"] = 1
    raw["backends"][1]["local"] = False  # a remote API (its live endpoint)
    raw["models"] = [
        {"name": "chat", "deployments": [{"backend": "e0", "model": "m"}, {"backend": "e1", "model": "m"}]}
    ]
    raw["keys"] = [k for k in raw["keys"] if k["name"] != "ops-bot"]
    raw["load_signals"] = {"enabled": False}
    return raw


@pytest.mark.timeout(60)
async def test_lines_not_run_by_the_deadline_expire(engine_factory, gateway_factory, tmp_path) -> None:
    slow = await engine_factory(itl_s=0.05, output_tokens=10)  # ~0.5 s a line, one at a time
    raw = batch_config([slow], str(tmp_path / "b.db"), completion_windows={"24h": 86400, "2s": 2}, max_window=1)
    raw["backends"][0]["max_concurrency"] = 1
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}") for i in range(20)], window="2s")
    done = await wait_final(client, batch.id, timeout=30)
    assert done.status == "expired" and done.expired_at
    counts = done.request_counts
    assert 0 < counts.completed < 20 and counts.completed + counts.failed == 20
    out = await output_lines(client, done.output_file_id)
    errors = await output_lines(client, done.error_file_id)
    assert len(out) == counts.completed and len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert {o["custom_id"] for o in out} | {e["custom_id"] for e in errors} == {f"r{i}" for i in range(20)}


async def test_batch_lines_stay_on_local_engines(engine_factory, gateway_factory, tmp_path) -> None:
    local, remote = await engine_factory(itl_s=0.01, output_tokens=5), await engine_factory()
    gw = await gateway_factory(local_and_remote(local, remote, str(tmp_path / "b.db"), max_window=8))
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}") for i in range(20)])
    assert (await wait_final(client, batch.id)).request_counts.completed == 20
    assert local.stats.requests_total == 20 and remote.stats.requests_total == 0
    ask = [client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}]) for _ in range(4)]
    await asyncio.gather(*ask)
    assert remote.stats.requests_total >= 1  # interactive requests do use it


@pytest.mark.timeout(60)
async def test_a_batch_at_risk_spills_to_the_remote_deployment(engine_factory, gateway_factory, tmp_path) -> None:
    local, remote = await engine_factory(itl_s=0.05, output_tokens=10), await engine_factory()
    raw = local_and_remote(
        local, remote, str(tmp_path / "b.db"), spill="remote", completion_windows={"24h": 86400, "6s": 6}, max_window=4
    )
    gw = await gateway_factory(raw)
    client = sdk(gw)
    fid = await upload(client, [line(f"r{i}") for i in range(40)])  # ~20 s on the local engine alone
    batch = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="6s")
    done = await wait_final(client, batch.id, timeout=30)
    assert done.status == "completed" and done.request_counts.completed == 40
    assert remote.stats.requests_total > 0 and local.stats.requests_total > 0
