"""OpenAI / vLLM wire format: SDK parsing and SSE bytes."""

from __future__ import annotations

import math

import openai
import orjson
import pytest

from tests.loadtest.helpers import chat_body, post, split_events


async def test_chat_non_stream_parses_in_sdk(engine, sdk):
    client = sdk(engine)
    r = await client.chat.completions.create(model="my-model", messages=[{"role": "user", "content": "hello there"}])
    assert r.id.startswith("chatcmpl-") and len(r.id) == len("chatcmpl-") + 32
    assert r.object == "chat.completion" and r.model == "my-model"
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content and choice.message.tool_calls is None
    assert r.usage.completion_tokens == 16  # default output_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16 > 16

    short = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], max_tokens=5
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    assert choice.message.content.startswith(short.choices[0].message.content)
    capped = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_completion_tokens=3
    )
    assert capped.usage.completion_tokens == 3


async def test_chat_non_stream_body_shape(engine, session):
    status, headers, raw = await post(session, engine.url + "/chat/completions", chat_body())
    assert status == 200 and headers["Content-Type"] == "application/json"
    body = orjson.loads(raw)
    assert list(body)[:5] == ["id", "object", "created", "model", "choices"]
    assert list(body["usage"])[:3] == ["prompt_tokens", "total_tokens", "completion_tokens"]
    choice = body["choices"][0]
    assert choice["logprobs"] is None and "tool_calls" not in choice["message"]
    assert isinstance(body["created"], int)


async def test_chat_stream_parses_in_sdk_and_matches_non_stream(engine, sdk):
    client = sdk(engine)
    messages = [{"role": "user", "content": "stream me"}]
    full = await client.chat.completions.create(model="m", messages=messages)
    stream = await client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("include_usage", [False, True])
async def test_sse_framing_byte_for_byte(engine, session, include_usage):
    body = chat_body("framing", stream=True, max_tokens=4)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with session.post(engine.url + "/chat/completions", json=body) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await r.read()
    events = split_events(raw)
    assert events[-1] == b"[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    objs = [orjson.loads(e) for e in events[:-1]]
    for payload, obj in zip(events, objs, strict=False):
        assert orjson.dumps(obj) == payload  # compact JSON, keys in the order shown
        assert list(obj)[:5] == ["id", "object", "created", "model", "choices"]
    assert objs[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    tokens = objs[1:5]
    assert [list(o["choices"][0]) for o in tokens[:-1]] == [["index", "delta", "logprobs", "finish_reason"]] * 3
    assert tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert tokens[-1]["choices"][0]["stop_reason"] is None
    with_usage = [o for o in objs if "usage" in o]
    if include_usage:
        assert len(objs) == 6 and with_usage == [objs[-1]]
        assert objs[-1]["choices"] == []
        assert objs[-1]["usage"]["completion_tokens"] == 4
        assert list(objs[-1]["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens"]
    else:
        assert len(objs) == 5 and with_usage == []


async def test_continuous_usage_stats_on_every_chunk(engine, session):
    body = chat_body(stream=True, max_tokens=3, stream_options={"include_usage": True, "continuous_usage_stats": True})
    _, _, raw = await post(session, engine.url + "/chat/completions", body)
    objs = [orjson.loads(e) for e in split_events(raw)[:-1]]
    assert [o["usage"]["completion_tokens"] for o in objs] == [0, 1, 2, 3, 3]


async def test_stream_options_without_stream_is_rejected(engine, session):
    status, _, raw = await post(
        session, engine.url + "/chat/completions", chat_body(stream_options={"include_usage": True})
    )
    assert status == 400 and orjson.loads(raw)["error"]["param"] == "stream_options"


async def test_n_choices(engine, sdk):
    r = await sdk(engine).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "many"}], n=3, max_tokens=4
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage.completion_tokens == 12


async def test_completions_sdk(engine, sdk):
    client = sdk(engine)
    r = await client.completions.create(model="m", prompt="Once upon a time", max_tokens=6)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    stream = await client.completions.create(
        model="m", prompt="Once upon a time", max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage.completion_tokens == 6
    multi = await client.completions.create(model="m", prompt=["a", "b"], max_tokens=2)
    assert [c.index for c in multi.choices] == [0, 1] and multi.usage.completion_tokens == 4
    ids = await client.completions.create(model="m", prompt=[1, 2, 3, 4, 5], max_tokens=2)
    assert ids.usage.prompt_tokens == 5


async def test_completions_sse_bytes(engine, session):
    _, _, raw = await post(
        session, engine.url + "/completions", {"model": "m", "prompt": "hi", "max_tokens": 2, "stream": True}
    )
    events = split_events(raw)
    assert events[-1] == b"[DONE]" and len(events) == 3
    first = orjson.loads(events[0])
    assert first["object"] == "text_completion"
    assert list(first["choices"][0]) == ["index", "text", "logprobs", "finish_reason", "stop_reason"]


async def test_embeddings_sdk_base64_and_float(engine, session, sdk):
    client = sdk(engine)
    r = await client.embeddings.create(model="emb", input=["same", "same", "other"])
    assert engine.stats.last_request_body["encoding_format"] == "base64"  # the SDK default
    vecs = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and len(vecs[0]) == 384
    assert math.isclose(sum(x * x for x in vecs[0]), 1.0, rel_tol=1e-5)
    assert vecs[0] == vecs[1] and vecs[0] != vecs[2]
    assert r.usage.prompt_tokens == r.usage.total_tokens == 1 + 1 + 2  # 4 bytes per token
    status, _, raw = await post(
        session, engine.url + "/embeddings", {"model": "emb", "input": "same", "encoding_format": "float"}
    )
    body = orjson.loads(raw)
    assert status == 200 and body["object"] == "list"
    assert body["data"][0]["embedding"] == vecs[0]  # float32 values, same through both encodings
    small = await client.embeddings.create(model="emb", input="x", encoding_format="float", dimensions=8)
    assert len(small.data[0].embedding) == 8


async def test_models_and_health(make_engine, session, sdk):
    eng = await make_engine(served_model_names=["llama-3-8b", "alias"], max_model_len=4096)
    models = await sdk(eng).models.list()
    assert [m.id for m in models.data] == ["llama-3-8b", "alias"]
    assert models.data[0].owned_by == "vllm"
    async with session.get(eng.base + "/health") as r:
        assert r.status == 200 and await r.read() == b""


async def test_bad_requests_get_vllm_error_shape(make_engine, session, sdk):
    eng = await make_engine(served_model_names=["known"])
    status, _, raw = await post(session, eng.url + "/chat/completions", b"{not json")
    err = orjson.loads(raw)["error"]
    assert status == 400 and err["type"] == "BadRequestError" and err["code"] == 400
    assert list(err) == ["message", "type", "param", "code"]
    status, _, raw = await post(session, eng.url + "/chat/completions", {"model": "known"})
    assert status == 400 and orjson.loads(raw)["error"]["param"] == "messages"
    status, _, raw = await post(
        session, eng.url + "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 400 and orjson.loads(raw)["error"]["param"] == "model"
    status, _, raw = await post(session, eng.url + "/chat/completions", chat_body() | {"model": "x"})
    assert status == 404 and orjson.loads(raw) == {
        "error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}
    }
    with pytest.raises(openai.NotFoundError):
        await sdk(eng).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert eng.stats.errors == 5 and eng.stats.completed == 0


async def test_context_length_error(make_engine, session):
    eng = await make_engine(max_model_len=64)
    status, _, raw = await post(session, eng.url + "/chat/completions", chat_body("y" * 400))
    err = orjson.loads(raw)["error"]
    assert status == 400 and "maximum context length is 64 tokens" in err["message"]


async def test_response_format_json(engine, sdk):
    client = sdk(engine)
    r = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert isinstance(orjson.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    r = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert set(orjson.loads(r.choices[0].message.content)) == {"name", "age"}
