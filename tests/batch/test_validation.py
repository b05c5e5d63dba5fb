"""Bad input files: every problem located (line number, code), at upload (the line's shape) or at
batch creation (the batch's endpoint, one model, a model the key may use)."""

from __future__ import annotations

import io

import openai
import pytest

from tests.batch.conftest import batch_config, jsonl, line, upload, wait_final
from tests.conftest import KEY_CHAT, sdk


@pytest.fixture
async def gw(engine_factory, gateway_factory, tmp_path):
    return await gateway_factory(batch_config([await engine_factory()], str(tmp_path / "b.db"), max_line_bytes=2000))


async def test_an_upload_names_each_bad_line(gw) -> None:
    lines = [
        line("ok"),
        b"{not json",
        {"method": "POST", "url": "/v1/chat/completions", "body": {"model": "chat"}},
        line("ok"),
        {**line("get"), "method": "GET"},
        {**line("where"), "url": "/v1/images/generations"},
        line("huge", "x" * 3000),
        line("stream", stream=True),
    ]
    with pytest.raises(openai.BadRequestError) as e:
        await sdk(gw).files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    msg = e.value.body["message"]
    assert e.value.code == "invalid_file"
    for where in (
        "line 2: The line is not valid JSON",
        "line 3: Missing required parameter: 'custom_id'",
        "line 4: The custom_id 'ok' appears on an earlier line",
        "line 5: 'method' must be",
        "line 6: 'url' must be one of",
        "line 7: The line is larger than 2000 bytes",
        "line 8: Batch requests cannot be streamed",
    ):
        assert where in msg, (where, msg)
    assert "line 1:" not in msg
    assert "The file has 7 invalid line(s)" in msg


async def test_too_many_lines(engine_factory, gateway_factory, tmp_path) -> None:
    gw = await gateway_factory(batch_config([await engine_factory()], str(tmp_path / "b.db"), max_lines=3))
    with pytest.raises(openai.BadRequestError) as e:
        await upload(sdk(gw), [line(f"r{i}") for i in range(4)])
    assert "more than 3 requests" in e.value.body["message"]


async def test_only_batch_files_are_taken(gw) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        await sdk(gw).files.create(file=("in.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="fine-tune")
    assert e.value.code == "invalid_purpose"


async def test_a_batch_that_does_not_fit_its_lines_fails_with_located_errors(gw) -> None:
    client = sdk(gw, KEY_CHAT)  # ops-bot: may use model "chat" only
    fid = await upload(
        client,
        [
            line("a"),
            line("b", url="/v1/completions"),
            line("c", model="embed"),
            line("d"),
        ],
    )
    batch = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    got = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert got == [(2, "mismatched_url", "url"), (3, "mismatched_model", "body.model")]
    assert (await wait_final(client, batch.id)).status == "failed"


async def test_a_model_the_key_may_not_use_fails_the_batch(gw) -> None:
    client = sdk(gw, KEY_CHAT)
    fid = await upload(client, [line("a", model="embed"), line("b", model="embed")])
    batch = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed"
    assert [(e.line, e.code) for e in batch.errors.data] == [(1, "model_not_allowed"), (2, "model_not_allowed")]
    fid = await upload(client, [line("a", model="nope")])
    batch = await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    assert [(e.line, e.code) for e in batch.errors.data] == [(1, "model_not_found")]


async def test_bad_batch_parameters(gw) -> None:
    client = sdk(gw)
    fid = await upload(client, [line("a")])
    with pytest.raises(openai.BadRequestError) as e:
        await client.batches.create(input_file_id=fid, endpoint="/v1/moderations", completion_window="24h")
    assert e.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        await client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="1h")
    assert e.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
