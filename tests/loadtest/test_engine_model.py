"""The engine model: continuous batching, KV blocks, preemption, prefix cache, cancellation,
determinism, time_scale. Durations are simulated; time_scale keeps the wall time short."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from loadtest.engine import EngineConfig, SimEngine, start_engine
from tests.loadtest.helpers import chat_body, mean_gap, post, stream_times, wait_for

SYSTEM = "You are a meticulous assistant for the Switchyard gateway. " * 40  # ~600 tokens


async def test_batching_slows_decode(make_engine, session):
    eng = await make_engine(decode_base_s=0.01, decode_per_seq_s=0.005, time_scale=2)
    body = chat_body("batch", max_tokens=12)
    _, alone = await stream_times(session, eng.url + "/chat/completions", body)
    results = await asyncio.gather(
        *[
            stream_times(session, eng.url + "/chat/completions", chat_body(f"batch {i}", max_tokens=12))
            for i in range(8)
        ]
    )
    single = mean_gap(alone)  # (0.01 + 0.005) / 2 = 7.5 ms
    batched = sum(mean_gap(times) for _, times in results) / 8  # (0.01 + 8 * 0.005) / 2 = 25 ms
    assert batched > 2 * single
    assert 0.005 < single < 0.03 and 0.015 < batched < 0.08


async def test_kv_exhaustion_queues_requests(make_engine, session):
    # Each request: ~31 prompt tokens + 16 answer tokens = 3 blocks of 16; 7 blocks fit two.
    eng = await make_engine(itl_s=0.01, time_scale=2, kv_blocks=7, max_num_seqs=64)
    tasks = [
        asyncio.create_task(post(session, eng.url + "/chat/completions", chat_body("q" * 100 + str(i))))
        for i in range(6)
    ]
    seen_waiting = seen_running = 0
    while not all(t.done() for t in tasks):
        seen_waiting = max(seen_waiting, eng.stats.waiting)
        seen_running = max(seen_running, eng.stats.running)
        await asyncio.sleep(0.002)
    assert all(t.result()[0] == 200 for t in tasks)
    assert seen_waiting >= 3 and seen_running == 2
    assert eng.stats.kv_blocks_used == 0 and eng.stats.completed == 6


async def test_waiting_is_exported_in_metrics(make_engine, session):
    eng = await make_engine(itl_s=0.02, time_scale=2, max_num_seqs=1)
    tasks = [
        asyncio.create_task(post(session, eng.url + "/chat/completions", chat_body(str(i), max_tokens=6)))
        for i in range(3)
    ]
    await wait_for(lambda: eng.stats.running == 1 and eng.stats.waiting == 2)
    async with session.get(eng.base + "/metrics") as r:
        text = await r.text()
    assert 'vllm:num_requests_waiting{model_name="sim-model",engine="0"} 2.0' in text
    assert 'vllm:num_requests_running{model_name="sim-model",engine="0"} 1.0' in text
    await asyncio.gather(*tasks)


async def test_preemption_when_blocks_run_out(make_engine, session):
    eng = await make_engine(itl_s=0.005, time_scale=2, kv_blocks=12, max_num_seqs=8)
    body = chat_body("p" * 100, max_tokens=60, ignore_eos=True)  # grows to 6 blocks each
    results = await asyncio.gather(*[post(session, eng.url + "/chat/completions", body) for _ in range(4)])
    assert eng.stats.preempted > 0
    for status, _, raw in results:  # preempted requests still finish with every token
        assert status == 200 and orjson.loads(raw)["usage"]["completion_tokens"] == 60
    async with session.get(eng.base + "/metrics") as r:
        assert "vllm:num_preemptions_total" in await r.text()
    assert eng.stats.kv_blocks_used == 0


async def test_no_preemption_reserves_blocks(make_engine, session):
    eng = await make_engine(itl_s=0.005, time_scale=2, kv_blocks=12, max_num_seqs=8, preemption=False)
    body = chat_body("p" * 100, max_tokens=60, ignore_eos=True)
    results = await asyncio.gather(*[post(session, eng.url + "/chat/completions", body) for _ in range(4)])
    assert all(s == 200 for s, _, _ in results) and eng.stats.preempted == 0


async def test_prefix_cache_hits_shorten_ttft(make_engine, session):
    eng = await make_engine(prefill_s_per_token=0.001, decode_base_s=0.002, time_scale=2)
    url = eng.url + "/chat/completions"

    def body(user: str) -> dict:
        return {
            "model": "m",
            "max_tokens": 2,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        }

    ttft_cold, _ = await stream_times(session, url, body("first question"))
    hits_before = eng.stats.prefix_hits_tokens
    ttft_warm, _ = await stream_times(session, url, body("another question"))
    hits = eng.stats.prefix_hits_tokens - hits_before
    assert hits >= 550 and hits % 16 == 0  # whole blocks of the shared system prompt
    assert ttft_cold > 0.25  # ~600 uncached tokens x 1 ms / time_scale 2
    assert ttft_warm < ttft_cold / 2  # only the few tokens after the shared prefix
    assert eng.stats.prefix_queries_tokens > hits
    async with session.get(eng.base + "/metrics") as r:
        text = await r.text()
    assert f'vllm:prefix_cache_hits_total{{model_name="sim-model",engine="0"}} {float(hits)}' in text


async def test_follow_up_turn_hits_cached_answer(make_engine, session):
    eng = await make_engine(output_tokens=64)
    url = eng.url + "/chat/completions"
    first = [{"role": "system", "content": SYSTEM[:400]}, {"role": "user", "content": "q1"}]
    _, _, raw = await post(session, url, {"model": "m", "messages": first})
    answer = orjson.loads(raw)["choices"][0]["message"]["content"]
    hits = []
    for content in ("x" * len(answer), answer):  # a different answer, then the real one
        before = eng.stats.prefix_hits_tokens
        follow = first + [{"role": "assistant", "content": content}, {"role": "user", "content": "q2"}]
        await post(session, url, {"model": "m", "messages": follow})
        hits.append(eng.stats.prefix_hits_tokens - before)
    # The generated answer's blocks were cached: the real follow-up hits through it.
    assert hits[1] >= hits[0] + len(answer) // 4 - 16 and hits[1] > 150


async def test_prefix_cache_lru_capacity(make_engine, session):
    eng = await make_engine(prefix_cache_blocks=4)
    await post(session, eng.url + "/chat/completions", chat_body(SYSTEM))
    await post(session, eng.url + "/chat/completions", chat_body(SYSTEM))
    assert eng.stats.prefix_hits_tokens == 0  # the LRU only keeps the last 4 blocks


async def test_client_disconnect_mid_stream_frees_slot(make_engine):
    eng = await make_engine(itl_s=0.02, max_num_seqs=1)
    async with aiohttp.ClientSession() as s:
        resp = await s.post(eng.url + "/chat/completions", json=chat_body(stream=True, max_tokens=200))
        for _ in range(3):
            await resp.content.readuntil(b"\n\n")
        assert eng.stats.running == 1 and eng.stats.kv_blocks_used > 0
        resp.close()  # drop the connection mid-stream
    await wait_for(lambda: eng.stats.cancelled == 1)
    assert eng.stats.running == 0 and eng.stats.kv_blocks_used == 0
    assert eng.stats.completed == 0 and eng.stats.completion_tokens < 20


async def test_queued_request_cancelled_by_client_timeout(make_engine, session):
    eng = await make_engine(itl_s=0.02, max_num_seqs=1)
    busy = asyncio.create_task(post(session, eng.url + "/chat/completions", chat_body()))
    await wait_for(lambda: eng.stats.running == 1)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1)) as s2:
            await post(s2, eng.url + "/chat/completions", chat_body("queued"))
        raise AssertionError("expected a timeout")
    except TimeoutError:
        pass
    await wait_for(lambda: eng.stats.cancelled == 1 and eng.stats.waiting == 0)
    assert (await busy)[0] == 200 and eng.stats.completed == 1


async def test_queue_wait_counts_in_ttft(make_engine, session):
    eng = await make_engine(itl_s=0.01, time_scale=2, max_num_seqs=1)
    url = eng.url + "/chat/completions"
    (ttft1, _), (ttft2, _) = await asyncio.gather(
        stream_times(session, url, chat_body("a")), stream_times(session, url, chat_body("b"))
    )
    assert max(ttft1, ttft2) > 0.07  # waited for the other's 16 tokens x 5 ms


async def test_deterministic_with_seed(session):
    engines = [await start_engine(EngineConfig(seed=s)) for s in (7, 7, 8)]
    try:
        bodies = []
        for eng in engines:
            _, _, raw = await post(session, eng.url + "/chat/completions", chat_body("determinism"))
            bodies.append(orjson.loads(raw))
        a, b, c = (x["choices"][0]["message"]["content"] for x in bodies)
        assert a == b and a != c
        assert bodies[0]["id"] == bodies[1]["id"]  # ids are seeded too
        assert bodies[0]["usage"] == bodies[1]["usage"]
        _, _, raw = await post(session, engines[0].url + "/chat/completions", chat_body("determinism"))
        again = orjson.loads(raw)
        assert again["choices"][0]["message"]["content"] == a and again["id"] != bodies[0]["id"]
        _, _, raw = await post(session, engines[0].url + "/chat/completions", chat_body("other"))
        assert orjson.loads(raw)["choices"][0]["message"]["content"] != a
    finally:
        for eng in engines:
            await eng.stop()


async def test_output_length_varies_by_seed_and_prompt(make_engine, session):
    eng = await make_engine(output_tokens=4, output_tokens_max=40)
    lengths = set()
    for i in range(12):
        _, _, raw = await post(session, eng.url + "/chat/completions", chat_body(f"vary {i}"))
        lengths.add(orjson.loads(raw)["usage"]["completion_tokens"])
    assert len(lengths) > 3 and min(lengths) >= 4 and max(lengths) <= 40


async def test_time_scale_speeds_up_wall_time(make_engine, session):
    durations = {}
    for scale in (1.0, 10.0):
        eng = await make_engine(itl_s=0.02, ttft_s=0.02, time_scale=scale)
        t0 = time.perf_counter()
        status, _, _ = await post(session, eng.url + "/chat/completions", chat_body(max_tokens=10))
        durations[scale] = time.perf_counter() - t0
        assert status == 200
    assert durations[1.0] >= 0.2  # 20 ms + 10 tokens x 20 ms, simulated = wall
    assert durations[10.0] < durations[1.0] / 2  # ~22 ms expected; generous for slow hosts


async def test_instant_engine_is_fast(engine, session):
    assert engine.config.instant and not engine.config.uses_scheduler
    t0 = time.perf_counter()
    for _ in range(100):
        await post(session, engine.url + "/chat/completions", chat_body(stream=True))
    assert time.perf_counter() - t0 < 1.0
    assert engine.stats.completed == 100 and engine.stats.running == 0


async def test_stop_leaves_no_tasks(make_engine, session):
    eng: SimEngine = await make_engine(itl_s=0.01)
    await post(session, eng.url + "/chat/completions", chat_body(max_tokens=2))
    assert eng.scheduler._task is not None
    await eng.stop()
    assert eng.scheduler._task is None
    names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]
    assert not any("Scheduler" in n for n in names)
