"""The Batch API through the openai SDK: files, batches, outputs, request counts, listing, cancel."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import openai
import pytest

from tests.batch.conftest import batch_config, jsonl, line, output_lines, start_batch, upload, wait_final
from tests.conftest import sdk


@pytest.fixture
async def gw(engine_factory, gateway_factory, store_db):
    engines = [await engine_factory(), await engine_factory()]
    return await gateway_factory(batch_config(engines, store_db))


async def test_a_batch_runs_every_line_once_and_the_sdk_reads_the_output(gw) -> None:
    client = sdk(gw)
    fid = await upload(client, [line(f"r{i}", f"question {i}", max_tokens=5) for i in range(20)])
    f = await client.files.retrieve(fid)
    assert (f.purpose, f.filename, f.status) == ("batch", "input.jsonl", "processed")
    batch = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "in_progress" and batch.request_counts.total == 20
    done = await wait_final(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (20, 0)
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    out = await output_lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(f"r{i}" for i in range(20))
    for o in out:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["object"] == "chat.completion"
        assert o["response"]["body"]["choices"][0]["message"]["content"]
    assert done.error_file_id is None
    assert done.usage is not None and done.usage.output_tokens > 0


async def test_failed_lines_go_to_the_error_file(gw) -> None:
    client = sdk(gw)
    bad = line("too-long", max_tokens=5)
    bad["body"]["messages"] = "not a list"  # the gateway answers 400 for this line alone
    batch = await start_batch(client, [line("ok", max_tokens=5), bad])
    done = await wait_final(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    errors = await output_lines(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["too-long"]
    assert errors[0]["response"]["status_code"] == 400
    assert "messages" in errors[0]["response"]["body"]["error"]["message"]


async def test_listing_pages_newest_first(gw) -> None:
    client = sdk(gw)
    fid = await upload(client, [line("a", max_tokens=1)])
    ids = []
    for _ in range(3):
        b = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
        ids.append(b.id)
    first = await client.batches.list(limit=2)
    assert [b.id for b in first.data] == [ids[2], ids[1]] and first.has_more
    second = await client.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in second.data] == [ids[0]] and not second.has_more
    everything = [b.id async for b in client.batches.list(limit=1)]
    assert everything == ids[::-1]
    for bid in ids:
        await wait_final(client, bid)
    inputs = await client.files.list(purpose="batch")
    assert [f.id for f in inputs.data] == [fid]
    outputs = await client.files.list(purpose="batch_output")
    assert len(outputs.data) == 3 and all(f.filename.endswith("_output.jsonl") for f in outputs.data)


async def test_cancel_stops_the_batch_and_keeps_what_finished(engine_factory, gateway_factory, store_db) -> None:
    slow = await engine_factory(itl_s=0.05, output_tokens=20)
    gw = await gateway_factory(batch_config([slow], store_db, initial_window=2, max_window=2))
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}") for i in range(40)])
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = await wait_final(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts.completed < 40 and counts.completed + counts.failed == 40
    errors = await output_lines(client, done.error_file_id)
    assert errors and all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in errors)
    again = await client.batches.cancel(batch.id)  # a cancelled batch: answered as it is
    assert again.status == "cancelled"


async def test_a_finished_batch_cannot_be_cancelled(gw) -> None:
    client = sdk(gw)
    batch = await start_batch(client, [line("a", max_tokens=1)])
    assert (await wait_final(client, batch.id)).status == "completed"
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(batch.id)


async def test_deleted_files_are_gone(gw) -> None:
    client = sdk(gw)
    fid = await upload(client, [line("a")])
    deleted = await client.files.delete(fid)
    assert deleted.deleted and deleted.id == fid
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(fid)
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")


async def test_an_upload_past_the_size_limit_is_refused(engine_factory, gateway_factory, tmp_path) -> None:
    gw = await gateway_factory(batch_config([await engine_factory()], str(tmp_path / "b.db"), max_file_bytes=1000))
    client = sdk(gw)
    big = jsonl([line(f"r{i}", "x" * 100) for i in range(20)])
    with pytest.raises(openai.APIStatusError) as e:
        await client.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="batch")
    assert e.value.status_code == 413


async def test_metrics_count_lines_tokens_and_batches_per_team(gw) -> None:
    client = sdk(gw)
    bad = line("bad", max_tokens=3)
    bad["body"]["messages"] = "not a list"
    batch = await start_batch(client, [line(f"r{i}", max_tokens=3) for i in range(5)] + [bad])
    done = await wait_final(client, batch.id)
    async with aiohttp.ClientSession() as s, s.get(gw.base + "/metrics") as r:
        text = await r.text()
    assert 'switchyard_batch_lines_finished_total{outcome="done",team="research"} 5.0' in text
    assert 'switchyard_batch_lines_finished_total{outcome="failed",team="research"} 1.0' in text
    assert 'switchyard_batches_total{status="completed"} 1.0' in text
    assert done.usage is not None
    assert (
        f'switchyard_batch_tokens_total{{kind="completion",team="research"}} {float(done.usage.output_tokens)}' in text
    )
    assert 'switchyard_batch_lines_outstanding{team="research"} 0.0' in text
    await asyncio.sleep(0.2)  # a poll after the batch ended: nothing pending any more
    async with aiohttp.ClientSession() as s, s.get(gw.base + "/metrics") as r:
        assert 'switchyard_batch_lines_pending{team="research"} 0.0' in await r.text()


async def test_embeddings_and_responses_batches(gw) -> None:
    client = sdk(gw)
    emb = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "embed", "input": f"t{i}"}}
        for i in range(3)
    ]
    batch = await start_batch(client, emb, "/v1/embeddings")
    done = await wait_final(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = await output_lines(client, done.output_file_id)
    assert all(o["response"]["body"]["data"][0]["embedding"] for o in out)

    resp = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses", "body": {"model": "chat", "input": f"hi {i}"}}
        for i in range(3)
    ]
    batch = await start_batch(client, resp, "/v1/responses")
    done = await wait_final(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3, done
    out = await output_lines(client, done.output_file_id)
    assert all(o["response"]["body"]["object"] == "response" for o in out)
    assert all(o["response"]["body"]["output"][0]["content"][0]["text"] for o in out)
