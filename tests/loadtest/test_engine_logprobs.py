"""Logprobs from the simulated engine when a request asks for them, in vLLM's shapes, as the openai
SDK parses them; errors worded as vLLM's."""

from __future__ import annotations

import orjson
import pytest

from tests.loadtest.helpers import chat_body, post

ASK = [{"role": "user", "content": "Tell me something."}]


def _check_chat_entries(entries, text: str, k: int) -> None:
    assert "".join(e.token for e in entries) == text
    for e in entries:
        assert bytes(e.bytes) == e.token.encode() and e.logprob <= 0
        assert len(e.top_logprobs) == k
        if k:
            assert (e.top_logprobs[0].token, e.top_logprobs[0].logprob) == (
                e.token,
                e.logprob,
            )  # the chosen, most likely
            values = [t.logprob for t in e.top_logprobs]
            assert values == sorted(values, reverse=True) and len({t.token for t in e.top_logprobs}) == k


@pytest.mark.parametrize("k", [0, 3])
async def test_chat_logprobs_non_stream(engine, sdk, k) -> None:
    r = await sdk(engine).chat.completions.create(model="m", messages=ASK, max_tokens=6, logprobs=True, top_logprobs=k)
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens == 6
    _check_chat_entries(entries, r.choices[0].message.content, k)


async def test_chat_logprobs_stream_one_entry_per_token(engine, sdk) -> None:
    s = await sdk(engine).chat.completions.create(
        model="m", messages=ASK, max_tokens=5, logprobs=True, top_logprobs=2, stream=True
    )
    chunks = [c async for c in s]
    assert chunks[0].choices[0].logprobs is None  # the role chunk, like vLLM
    tokens = chunks[1:]
    assert all(len(c.choices[0].logprobs.content) == 1 for c in tokens)
    text = "".join(c.choices[0].delta.content for c in tokens)
    _check_chat_entries([c.choices[0].logprobs.content[0] for c in tokens], text, 2)


async def test_logprobs_are_deterministic_and_absent_unless_asked(engine, sdk) -> None:
    client = sdk(engine)
    a = await client.chat.completions.create(model="m", messages=ASK, max_tokens=4, logprobs=True)
    b = await client.chat.completions.create(model="m", messages=ASK, max_tokens=4, logprobs=True)
    assert a.choices[0].logprobs == b.choices[0].logprobs
    plain = await client.chat.completions.create(model="m", messages=ASK, max_tokens=4)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize("stream", [False, True])
async def test_completion_logprobs(engine, sdk, stream) -> None:
    client = sdk(engine)
    if stream:
        s = await client.completions.create(model="m", prompt="Once", max_tokens=5, logprobs=2, stream=True)
        parts = [c.choices[0] async for c in s]
        text = "".join(p.text for p in parts)
        tokens = [t for p in parts for t in p.logprobs.tokens]
        offsets = [o for p in parts for o in p.logprobs.text_offset]
        tops = [t for p in parts for t in p.logprobs.top_logprobs]
    else:
        r = await client.completions.create(model="m", prompt="Once", max_tokens=5, logprobs=2)
        lp = r.choices[0].logprobs
        text, tokens, offsets, tops = r.choices[0].text, lp.tokens, lp.text_offset, lp.top_logprobs
        assert len(lp.token_logprobs) == 5 and all(v <= 0 for v in lp.token_logprobs)
    assert "".join(tokens) == text and len(tokens) == 5
    assert offsets == [len("".join(tokens[:i])) for i in range(5)]
    assert all(len(t) == 2 and tok in t for t, tok in zip(tops, tokens, strict=True))


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"top_logprobs": 2}, "when using `top_logprobs`, `logprobs` must be set to true"),
        (
            {"logprobs": True, "top_logprobs": 21},
            "Requested sample logprobs of 21, which is greater than max allowed: 20",
        ),
    ],
)
async def test_logprob_errors_like_vllm(engine, session, extra, message) -> None:
    status, _, raw = await post(session, engine.url + "/chat/completions", chat_body(**extra))
    assert status == 400 and message in orjson.loads(raw)["error"]["message"]
