"""Every gateway feature applies to the Responses and Messages APIs (issue #14): limits and budgets
charged by the answer's usage, Anthropic's rate-limit headers and error classes on 429 / 503, caches
answering in the API's shape, retries before the first byte, session affinity from the agents' own
session fields, the log line, and the small things: echo_alias, x-ratelimit-* on every 429, CORS."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from gateway.keys import hash_key
from gateway.logs import configure_logging, reset_logging
from tests.apis.conftest import Answer, ScriptedChat
from tests.conftest import KEY_ALL, sdk
from tests.e2e.conftest import api_config
from tests.limits.helpers import ADMIN_KEY, settled, usage

HI = [{"role": "user", "content": "hi"}]


def oai(gw: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0)


def ant(gw: Any) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=gw.base, api_key=KEY_ALL, max_retries=0)


async def test_budgets_charge_translated_requests_by_their_usage(
    scripted: ScriptedChat, gateway_factory: Any, tmp_path: Any
) -> None:
    raw = api_config([scripted.url], admin_key_sha256=hash_key(ADMIN_KEY))
    raw["prices"] = {"m": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token
    raw["budgets"] = {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 10}],
    }
    raw["limits"] = {"rules": [{"scope": "key", "name": "*", "requests_per_minute": 100}]}
    gw = await gateway_factory(raw)
    r = await oai(gw).responses.with_raw_response.create(model="m", input="hi", max_output_tokens=500)
    assert r.headers["x-ratelimit-limit-requests"] == "100"
    async for _ in await oai(gw).responses.create(model="m", input="hi", stream=True, max_output_tokens=500):
        pass
    m = await ant(gw).messages.with_raw_response.create(model="m", max_tokens=500, messages=HI)
    assert m.headers["anthropic-ratelimit-requests-limit"] == "100"
    async with ant(gw).messages.stream(model="m", max_tokens=500, messages=HI) as s:
        await s.get_final_message()
    await settled(gw)
    report = (await usage(gw, team="research")).json()
    # settled to the 7 output tokens each answer reported, not the 500 reserved
    assert report["spend_usd"] == pytest.approx(4 * 7 * 0.001) and report["reserved_usd"] == 0
    assert report["by_model"]["m"]["requests"] == 4


async def test_rate_limited_messages_carry_anthropic_headers(scripted: ScriptedChat, gateway_factory: Any) -> None:
    raw = api_config([scripted.url])
    raw["limits"] = {"rules": [{"scope": "key", "name": "*", "requests_per_minute": 1}]}
    gw = await gateway_factory(raw)
    await ant(gw).messages.create(model="m", max_tokens=10, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as e:
        await ant(gw).messages.create(model="m", max_tokens=10, messages=HI)
    h = e.value.response.headers
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert int(h["retry-after"]) >= 1 and h["anthropic-ratelimit-requests-remaining"] == "0"
    assert h["anthropic-ratelimit-requests-limit"] == "1" and h["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert h["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as oe:
        await oai(gw).responses.create(model="m", input="hi")
    assert oe.value.code == "rate_limit_exceeded" and oe.value.response.headers["x-ratelimit-limit-requests"] == "1"


async def test_overloaded_messages_answer_503_with_retry_after(engine_factory: Any, gateway_factory: Any) -> None:
    engine = await engine_factory(ttft_s=1.0)
    raw = api_config([engine.url])
    raw["backends"][0]["max_concurrency"] = 1
    raw["admission"] = {"classes": {"interactive": {"max_wait_s": 0.2}}}  # waits 0.2 s in the queue, then 503
    gw = await gateway_factory(raw)
    first = asyncio.create_task(ant(gw).messages.create(model="m", max_tokens=5, messages=HI))
    await asyncio.sleep(0.3)
    with pytest.raises(anthropic.InternalServerError) as e:
        await ant(gw).messages.create(model="m", max_tokens=5, messages=HI)
    assert e.value.status_code == 503 and e.value.body["error"]["type"] == "overloaded_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert (await first).content


async def test_cache_hits_answer_in_the_api_shape(scripted: ScriptedChat, gateway_factory: Any) -> None:
    raw = api_config([scripted.url])
    raw["cache"] = {"exact": True}
    gw = await gateway_factory(raw)
    c = oai(gw)
    first = await c.responses.create(model="m", input="cache me", temperature=0)
    raw_hit = await c.responses.with_raw_response.create(model="m", input="cache me", temperature=0)
    hit = raw_hit.parse()
    assert raw_hit.headers["x-switchyard-cache"] == "hit-exact" and len(scripted.requests) == 1
    assert hit.output_text == first.output_text and hit.id != first.id and hit.status == "completed"
    assert (await c.responses.retrieve(hit.id)).output_text == first.output_text  # stored like any answer
    events = [e async for e in await c.responses.create(model="m", input="cache me", temperature=0, stream=True)]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == first.output_text and len(scripted.requests) == 1
    zero = {"temperature": 0}
    m1 = await ant(gw).messages.create(model="m", max_tokens=20, messages=HI, extra_body=zero)
    m2 = await ant(gw).messages.with_raw_response.create(model="m", max_tokens=20, messages=HI, extra_body=zero)
    assert m2.headers["x-switchyard-cache"] == "hit-exact" and (await m2.parse()).content[0].text == m1.content[0].text
    async with ant(gw).messages.stream(model="m", max_tokens=20, messages=HI, extra_body=zero) as s:
        assert (await s.get_final_message()).content[0].text == m1.content[0].text
    assert len(scripted.requests) == 2


async def test_retried_before_the_first_byte(scripted: ScriptedChat, gateway_factory: Any) -> None:
    gw = await gateway_factory(api_config([scripted.url]))
    scripted.push(Answer(status=503), Answer())
    assert (await oai(gw).responses.create(model="m", input="hi")).output_text
    scripted.push(Answer(status=500), Answer())
    async with ant(gw).messages.stream(model="m", max_tokens=10, messages=HI) as s:
        assert (await s.get_final_message()).content[0].text
    assert len(scripted.requests) == 4


async def test_one_log_line_with_the_endpoint_name(scripted: ScriptedChat, gateway_factory: Any) -> None:
    out = io.BytesIO()
    writer = configure_logging("info", "json", out=out)  # before the gateway: loggers cache on first use
    try:
        gw = await gateway_factory(api_config([scripted.url]))
        await oai(gw).responses.create(model="m", input="hi")
        await ant(gw).messages.create(model="m", max_tokens=10, messages=HI)
        await asyncio.sleep(0.2)
    finally:
        writer.close()
        reset_logging()  # as it was, the stdlib bridge off too: later tests configure their own
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    requests = [x for x in lines if x["event"] == "request"]
    assert [(x["endpoint"], x["api_mode"], x["status"]) for x in requests] == [
        ("responses", "translated", 200),
        ("messages", "translated", 200),
    ]
    assert all(x["completion_tokens"] == 7 and x["deployment"] == "b0/up-m" for x in requests)
    metrics = gw.gateway.metrics.render().decode()
    assert 'switchyard_api_requests_total{api="messages",mode="translated"} 1.0' in metrics


async def test_echo_alias(scripted: ScriptedChat, native_factory: Any, gateway_factory: Any) -> None:
    n = await native_factory(scripted.url)
    raw = api_config([scripted.url, n.url + "/v1"], [False, True])
    raw["models"][0]["echo_alias"] = True
    raw["models"][0]["policy"] = "round-robin"
    gw = await gateway_factory(raw)
    c = oai(gw)
    for _ in range(2):
        assert (await c.chat.completions.create(model="m", messages=HI)).model == "m"
        chunks = [ch async for ch in await c.chat.completions.create(model="m", messages=HI, stream=True)]
        assert {ch.model for ch in chunks} == {"m"}
        assert (await c.responses.create(model="m", input="hi")).model == "m"  # passed through too
        assert (await ant(gw).messages.create(model="m", max_tokens=5, messages=HI)).model == "m"
    assert n.requests >= 2  # some went through the native server
    raw["models"][0]["echo_alias"] = False
    plain = await gateway_factory(raw)
    assert (await oai(plain).chat.completions.create(model="m", messages=HI)).model == "up-m"


async def test_every_429_has_ratelimit_headers(scripted: ScriptedChat, gateway_factory: Any) -> None:
    gw = await gateway_factory(api_config([scripted.url]))  # no limits configured
    scripted.push(*[Answer(status=429)] * 3)  # every attempt refused upstream
    with pytest.raises(openai.RateLimitError) as e:
        await oai(gw).chat.completions.create(model="m", messages=HI)
    h = e.value.response.headers
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-reset-requests"].endswith("s")
    scripted.push(*[Answer(status=429)] * 3)
    with pytest.raises(anthropic.RateLimitError) as ae:
        await ant(gw).messages.create(model="m", max_tokens=5, messages=HI)
    assert ae.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_cors(scripted: ScriptedChat, gateway_factory: Any) -> None:
    gw = await gateway_factory(api_config([scripted.url], cors_origins=["https://agent.example"]))
    async with httpx.AsyncClient() as h:
        pre = await h.options(
            f"{gw.base}/v1/messages",
            headers={
                "Origin": "https://agent.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, anthropic-version, content-type",
            },
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://agent.example"
        assert "x-api-key" in pre.headers["access-control-allow-headers"]
        assert "POST" in pre.headers["access-control-allow-methods"]
        denied = await h.options(f"{gw.base}/v1/messages", headers={"Origin": "https://evil.example"})
        assert denied.status_code == 403
        r = await h.post(
            f"{gw.base}/v1/responses",
            json={"model": "m", "input": "hi"},
            headers={"Origin": "https://agent.example", "Authorization": f"Bearer {KEY_ALL}"},
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://agent.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"]
        off = await gateway_factory(api_config([scripted.url]))
        assert (
            await h.options(f"{off.base}/v1/messages", headers={"Origin": "https://agent.example"})
        ).status_code == 405


async def test_session_affinity_reads_the_agents_session(engine_factory: Any, gateway_factory: Any) -> None:
    engines = [await engine_factory() for _ in range(3)]
    raw = api_config([e.url for e in engines])
    raw["models"][0]["policy"] = "session-affinity"
    gw = await gateway_factory(raw)
    a, c = ant(gw), oai(gw)

    async def where(i: int, source: str) -> str:
        r: Any
        if source == "claude-header":
            r = await a.messages.with_raw_response.create(
                model="m", max_tokens=2, messages=HI, extra_headers={"x-claude-code-session-id": f"s{i}"}
            )
        elif source == "metadata":
            user_id = orjson.dumps({"device_id": "d", "session_id": f"s{i}"}).decode()
            r = await a.messages.with_raw_response.create(
                model="m", max_tokens=2, messages=HI, metadata={"user_id": user_id}
            )
        else:
            r = await c.responses.with_raw_response.create(
                model="m", input="hi", max_output_tokens=2, prompt_cache_key=f"s{i}"
            )
        return r.headers["x-switchyard-deployment"]

    for source in ("claude-header", "metadata", "prompt_cache_key"):
        placed = []
        for i in range(8):
            seen = {await where(i, source) for _ in range(3)}
            assert len(seen) == 1, (source, i, seen)  # one session, one engine
            placed.append(seen.pop())
        assert len(set(placed)) > 1  # sessions spread over the engines
    plain = await sdk(gw).chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=2)
    assert plain.headers["x-switchyard-deployment"]


async def test_stored_responses_survive_a_config_reload(scripted: ScriptedChat, tmp_path: Any) -> None:
    from gateway.server import start_gateway
    from tests.conftest import to_config
    from tests.e2e.test_reload import ADMIN, post_reload, write

    raw = api_config([scripted.url], admin_key_sha256=hash_key(ADMIN))
    path = tmp_path / "gw.yaml"
    write(path, raw)
    gw = await start_gateway(to_config(raw), port=0, config_path=str(path))
    try:
        first = await oai(gw).responses.create(model="m", input="remember this")
        old = gw.current
        raw["models"][0]["policy"] = "round-robin"  # any change
        write(path, raw)
        assert (await post_reload(gw.base))[0] == 200 and gw.current is not old
        follow = await oai(gw).responses.create(model="m", input="and now?", previous_response_id=first.id)
        assert follow.status == "completed" and len(scripted.requests[-1]["messages"]) == 3
        await asyncio.sleep(0.3)  # the old gateway drained and stopped: the store it handed over stays open
        assert (await oai(gw).responses.retrieve(first.id)).id == first.id
    finally:
        await gw.stop()


BAD_RESPONSES = [
    {"model": "m", "input": [{"role": ["user"], "content": "x"}]},
    {"model": "m", "input": [{"type": {"x": 1}}]},
    {"model": "m", "input": "x", "tools": [None]},
    {"model": "m", "input": "x", "tool_choice": {"type": []}, "tools": [{"type": "function", "name": "f"}]},
    {"model": "m", "input": "x", "text": {"format": []}},
    {"model": "m", "input": "x", "max_output_tokens": "5"},
    {"model": "m", "input": "x", "previous_response_id": 5},
    {"model": 5, "input": "x"},
    ["not", "an", "object"],
]
BAD_MESSAGES = [
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": {"a": 1}}]}]},
    {"model": "m", "max_tokens": 5, "messages": [{"role": ["user"], "content": "x"}]},
    {"model": "m", "max_tokens": 5, "messages": "x"},
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 5},
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": {"name": "f"}},
    {"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
]


async def test_malformed_requests_get_a_400_in_the_callers_shape(scripted: ScriptedChat, gateway_factory: Any) -> None:
    gw = await gateway_factory(api_config([scripted.url]))
    async with httpx.AsyncClient() as h:
        for body in BAD_RESPONSES:
            r = await h.post(f"{gw.base}/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY_ALL}"})
            assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
        for body in BAD_MESSAGES:
            r = await h.post(f"{gw.base}/v1/messages", json=body, headers={"x-api-key": KEY_ALL})
            assert r.status_code == 400 and r.json()["type"] == "error", (body, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
    assert not scripted.requests
