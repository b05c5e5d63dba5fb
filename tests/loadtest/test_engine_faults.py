"""Fault injection (in-process and over /sim/*) and the remote profile's limits."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import orjson
import pytest

from loadtest.engine import Fault
from tests.loadtest.helpers import chat_body, post, split_events, wait_for

CHAT = "/chat/completions"


@pytest.mark.parametrize("status,exc", [(500, openai.InternalServerError), (503, openai.InternalServerError)])
async def test_status_fault(engine, sdk, session, status, exc):
    engine.set_fault(Fault(kind="status", status=status, body="boom"))
    with pytest.raises(exc) as info:
        await sdk(engine).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    code, _, raw = await post(session, engine.url + CHAT, chat_body())
    assert code == status and orjson.loads(raw)["error"]["message"] == "boom"
    assert orjson.loads(raw)["error"]["code"] == status
    assert engine.stats.failed == 2 and engine.stats.completed == 0
    engine.clear_fault()
    assert (await post(session, engine.url + CHAT, chat_body()))[0] == 200


@pytest.mark.parametrize("retry_after,text", [(2, "2"), (0.5, "0.5"), (3.0, "3")])
async def test_429_with_retry_after(engine, sdk, session, retry_after, text):
    engine.set_fault(Fault(kind="status", status=429, retry_after=retry_after))
    code, headers, raw = await post(session, engine.url + CHAT, chat_body())
    assert code == 429 and headers["Retry-After"] == text
    with pytest.raises(openai.RateLimitError):
        await sdk(engine).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


async def test_count_limited_fault_clears_itself(engine, session):
    fault = Fault(kind="status", status=503, count=2)
    engine.set_fault(fault)
    codes = [(await post(session, engine.url + CHAT, chat_body()))[0] for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert engine.faults.fault is None and fault.count == 2  # the caller's object is untouched


async def test_fault_paths_and_probability(make_engine, session):
    eng = await make_engine(seed=3)
    eng.set_fault(Fault(kind="status", status=500, paths=["/v1/embeddings"]))
    assert (await post(session, eng.url + CHAT, chat_body()))[0] == 200
    assert (await post(session, eng.url + "/embeddings", {"model": "m", "input": "x"}))[0] == 500
    patterns = []
    for seed in (5, 5):
        e = await make_engine(seed=seed)
        e.set_fault(Fault(kind="status", status=500, probability=0.5))
        patterns.append([(await post(session, e.url + CHAT, chat_body()))[0] for _ in range(30)])
    assert patterns[0] == patterns[1]  # seeded
    assert 5 < patterns[0].count(500) < 25


async def test_hang_until_client_gives_up(engine):
    engine.set_fault(Fault(kind="hang"))
    t0 = time.perf_counter()
    with pytest.raises(asyncio.TimeoutError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as s:
            await post(s, engine.url + CHAT, chat_body())
    assert time.perf_counter() - t0 >= 0.19
    await wait_for(lambda: engine.stats.cancelled == 1)
    assert engine.stats.completed == 0 and engine.stats.failed == 0


async def test_drop_mid_stream(engine, sdk, session):
    engine.set_fault(Fault(kind="drop", after_chunks=3, count=2))
    stream = await sdk(engine).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(Exception) as info:
        async for chunk in stream:
            got.append(chunk)
    assert not isinstance(info.value, AssertionError)
    assert len(got) == 3 and got[0].choices[0].delta.role == "assistant"
    async with session.post(engine.url + CHAT, json=chat_body(stream=True)) as r:
        assert r.status == 200
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in r.content.iter_any():
                received += data
    assert len(split_events(received)) == 3
    assert engine.stats.failed == 2 and engine.stats.completed == 0
    assert (await post(session, engine.url + CHAT, chat_body(stream=True)))[0] == 200


async def test_drop_never_lets_done_through(engine, session):
    engine.set_fault(Fault(kind="drop", after_chunks=1000))
    async with session.post(engine.url + CHAT, json=chat_body(stream=True, max_tokens=3)) as r:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in r.content.iter_any():
                received += data
    events = split_events(received)
    assert len(events) == 4 and b"[DONE]" not in events


async def test_drop_non_stream_mid_body(engine, sdk):
    engine.set_fault(Fault(kind="drop"))
    with pytest.raises(openai.APIConnectionError):
        await sdk(engine).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert engine.stats.failed == 1


async def test_delay_fault(engine, session):
    engine.set_fault(Fault(kind="delay", delay_s=0.15, count=1))
    t0 = time.perf_counter()
    assert (await post(session, engine.url + CHAT, chat_body()))[0] == 200
    assert time.perf_counter() - t0 >= 0.14
    t0 = time.perf_counter()
    await post(session, engine.url + CHAT, chat_body())
    assert time.perf_counter() - t0 < 0.1


async def test_sim_http_control(engine, session):
    async with session.post(engine.base + "/sim/fault", json={"kind": "status", "status": 503, "retry_after": 1}) as r:
        assert r.status == 200
    code, headers, _ = await post(session, engine.url + CHAT, chat_body())
    assert code == 503 and headers["Retry-After"] == "1"
    async with session.post(engine.base + "/sim/fault", json={"kind": None}) as r:
        assert (await r.json())["fault"] is None
    assert (await post(session, engine.url + CHAT, chat_body()))[0] == 200
    async with session.post(engine.base + "/sim/fault", json={"kind": "status"}):
        pass
    async with session.delete(engine.base + "/sim/fault"):
        pass
    assert (await post(session, engine.url + CHAT, chat_body()))[0] == 200
    async with session.post(engine.base + "/sim/fault", json={"kind": "explode"}) as r:
        assert r.status == 400
    async with session.get(engine.base + "/sim/stats") as r:
        stats = await r.json()
    assert stats["requests_total"] == 3 and stats["failed"] == 1 and stats["completed"] == 2
    assert stats["requests_by_path"] == {"/v1/chat/completions": 3}
    assert stats["last_request_body"]["model"] == "m"
    async with session.post(engine.base + "/sim/reset") as r:
        assert r.status == 200
    async with session.get(engine.base + "/sim/stats") as r:
        stats = await r.json()
    assert stats["requests_total"] == 0 and stats["prefix_cache_blocks_used"] == 0


async def test_headers_are_recorded(engine, session):
    async with session.post(engine.url + CHAT, json=chat_body(), headers={"Authorization": "Bearer sk-upstream"}):
        pass
    assert engine.stats.last_request_headers["Authorization"] == "Bearer sk-upstream"


# --------------------------------------------------------------------------- remote


async def test_remote_rpm_limit_answers_429(make_engine, sdk, session):
    eng = await make_engine(profile="remote", rpm_limit=2, time_scale=120)
    assert (await post(session, eng.url + CHAT, chat_body()))[0] == 200
    assert (await post(session, eng.url + CHAT, chat_body()))[0] == 200
    code, headers, raw = await post(session, eng.url + CHAT, chat_body())
    assert code == 429
    wait = float(headers["Retry-After"])
    assert 0 < wait <= 0.5 and int(headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=1)
    assert headers["x-ratelimit-limit-requests"] == "2"
    err = orjson.loads(raw)["error"]
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        await sdk(eng).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert eng.stats.rate_limited == 2
    await asyncio.sleep(wait + 0.02)  # the 60 s simulated window has slid past
    assert (await post(session, eng.url + CHAT, chat_body()))[0] == 200


async def test_remote_tpm_limit(make_engine, session):
    eng = await make_engine(profile="remote", tpm_limit=60, time_scale=120)
    assert (await post(session, eng.url + CHAT, chat_body(max_tokens=20)))[0] == 200
    code, headers, raw = await post(session, eng.url + CHAT, chat_body(max_tokens=40))
    assert code == 429 and orjson.loads(raw)["error"]["type"] == "tokens" and "Retry-After" in headers


async def test_remote_cost_latency_and_wire(make_engine, sdk, session):
    eng = await make_engine(
        profile="remote", remote_latency_s=0.1, price_per_input_token=1e-6, price_per_output_token=4e-6
    )
    t0 = time.perf_counter()
    results = await asyncio.gather(*[post(session, eng.url + CHAT, chat_body(str(i))) for i in range(10)])
    assert time.perf_counter() - t0 < 0.35  # unlimited capacity: no queueing, no slowdown
    usage = [orjson.loads(raw)["usage"] for _, _, raw in results]
    cost = sum(u["prompt_tokens"] * 1e-6 + u["completion_tokens"] * 4e-6 for u in usage)
    assert eng.stats.cost_usd == pytest.approx(cost)
    async with session.get(eng.base + "/sim/stats") as r:
        assert (await r.json())["cost_usd"] == pytest.approx(cost)
    body = orjson.loads(results[0][2])
    assert body["system_fingerprint"] and "prompt_tokens_details" in body["usage"]
    _, _, raw = await post(
        session, eng.url + CHAT, chat_body(stream=True, max_tokens=2, stream_options={"include_usage": True})
    )
    objs = [orjson.loads(e) for e in split_events(raw)[:-1]]
    assert [o["choices"][0]["finish_reason"] if o["choices"] else "usage" for o in objs] == [
        None,
        None,
        None,
        "length",
        "usage",
    ]
    assert all(o["usage"] is None for o in objs[:-1]) and objs[-1]["usage"]["total_tokens"] > 2
    stream = await sdk(eng).chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream])


async def test_remote_unknown_model(make_engine, session):
    eng = await make_engine(profile="remote", served_model_names=["gpt-4o"])
    code, _, raw = await post(session, eng.url + CHAT, chat_body(model="gpt-5"))
    assert code == 404 and orjson.loads(raw)["error"]["code"] == "model_not_found"


async def test_recorded_headers_are_case_insensitive(engine, session):
    async with session.post(engine.url + CHAT, json=chat_body(), headers={"X-Api-Key": "k1"}):
        pass
    headers = engine.stats.last_request_headers
    assert isinstance(headers, dict) and headers["x-api-key"] == "k1" and "X-API-KEY" in headers
    assert orjson.dumps(engine.stats.snapshot())  # JSON-serialisable for /sim/stats


async def test_fault_on_health_and_models_when_named(engine, session):
    engine.set_fault(Fault(kind="status", status=503, paths=["/health", "/v1/models"]))
    async with session.get(engine.base + "/health") as r:
        assert r.status == 503
    async with session.get(engine.url + "/models") as r:
        assert r.status == 503
    assert (await post(session, engine.url + CHAT, chat_body()))[0] == 200
    engine.set_fault(Fault(kind="drop", paths=["/metrics"]))
    with pytest.raises(aiohttp.ClientError):
        async with session.get(engine.base + "/metrics") as r:
            await r.read()
    engine.clear_fault()
    async with session.get(engine.base + "/health") as r:
        assert r.status == 200


async def test_remote_counts_in_flight_during_latency(make_engine, session):
    eng = await make_engine(profile="remote", remote_latency_s=0.2)
    task = asyncio.create_task(post(session, eng.url + CHAT, chat_body()))
    await wait_for(lambda: eng.stats.running == 1)
    task.cancel()
    await wait_for(lambda: eng.stats.running == 0 and eng.stats.cancelled == 1)
