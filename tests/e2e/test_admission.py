"""The admission queue (gateway/admission/): a burst beyond max_concurrency waits instead of failing,
in priority order, least attained service first within a class, with deadlines, bounds and the
key's ceiling; the request's class reaches engines that schedule by priority."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, sdk
from tests.limits.helpers import settled

KEY_BATCH = "sk-test-batch-only"  # team "batch": default class batch, may not ask for more
MSG = [{"role": "user", "content": "hello"}]
HOLD = "hold"  # the `user` (or its prefix) of a stream TinyEngine holds open at its gate


class TinyEngine:
    """An OpenAI-compatible upstream on loopback that streams `tokens` chunks `itl_s` apart, counts
    how many requests it runs at once (and the peak), and records each request's body in order."""

    def __init__(self, tokens: int = 5, itl_s: float = 0.02, slots: int = 10_000) -> None:
        self.tokens, self.itl_s = tokens, itl_s
        # A stream whose `user` starts with HOLD ends once `gate` is set, or `step()` lets it through
        # (one per step, in the order they reached the gate).
        self.gate = asyncio.Event()
        self.held = 0  # HOLD streams waiting at the gate now
        self._tickets = self._let_through = 0
        self.slots = asyncio.Semaphore(slots)  # beyond this many at once, requests queue in the engine
        self.running = self.peak = 0
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "TinyEngine":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        return self

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            async with self.slots:
                return await self._answer(request, body, min(self.tokens, body.get("max_tokens") or self.tokens))
        finally:
            self.running -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any], tokens: int) -> web.StreamResponse:
        usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
        if not body.get("stream"):
            await asyncio.sleep(self.itl_s * tokens)
            message = {"role": "assistant", "content": "ok"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}
            return web.json_response({**answer, "usage": usage})
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(tokens):
            await asyncio.sleep(self.itl_s)
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if str(body.get("user", "")).startswith(HOLD):
            await self._hold()
        done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        last = {**base, "choices": [], "usage": usage}
        await resp.write(b"data: " + orjson.dumps(done) + b"\n\ndata: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _hold(self) -> None:
        ticket, self._tickets = self._tickets, self._tickets + 1
        self.held += 1
        try:
            while not (self.gate.is_set() or self._let_through > ticket):
                await asyncio.sleep(0.005)
        finally:
            self.held -= 1

    def close_gate(self) -> None:
        self.gate.clear()
        self._let_through = self._tickets

    def step(self) -> None:
        self._let_through += 1

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def tiny() -> AsyncIterator[Any]:
    engines: list[TinyEngine] = []

    async def make(**kw: Any) -> TinyEngine:
        e = await TinyEngine(**kw).start()
        engines.append(e)
        return e

    yield make
    for e in engines:
        await e.stop()


def config(engine: TinyEngine, max_concurrency: int, admission: dict | None = None, **backend: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 5},
        "backends": [{"name": "e0", "kind": "vllm", "url": engine.url, "max_concurrency": max_concurrency, **backend}],
        "models": [{"name": "chat", "deployments": [{"backend": "e0", "model": "m"}]}],
        "teams": [{"name": "research"}, {"name": "batch", "priority": "batch", "max_priority": "batch"}],
        "keys": [
            {"name": "research-agents", "team": "research", "sha256": hash_key(KEY_ALL)},
            {"name": "batch-jobs", "team": "batch", "sha256": hash_key(KEY_BATCH)},
        ],
        "load_signals": {"enabled": False},
    }
    if admission is not None:
        raw["admission"] = admission
    return raw


def client(gw: Any, key: str = KEY_ALL) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000), timeout=120)
    return sdk(gw, key, http_client=http)


async def stream_text(c: openai.AsyncOpenAI, max_tokens: int = 8, **extra: Any) -> str:
    stream = await c.chat.completions.create(model="chat", messages=MSG, stream=True, max_tokens=max_tokens, **extra)
    return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])


@pytest.mark.timeout(120)
async def test_a_burst_of_300_streams_into_64_slots_all_complete(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=5, itl_s=0.02)
    gw = await gateway_factory(config(engine, 64))
    c = client(gw)
    results = await asyncio.gather(*(stream_text(c) for _ in range(300)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert all(r.strip() == "t0 t1 t2 t3 t4" for r in results)
    assert engine.peak <= 64 and len(engine.bodies) == 300
    assert engine.peak == 64  # and the slots were used
    text = gw.gateway.metrics.render().decode()
    assert 'switchyard_queue_requests_total{class="interactive",model="chat",outcome="dispatched"}' in text


async def _until(cond: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _until_async(read: Callable[[], Any], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await read():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _fill(c: openai.AsyncOpenAI, engine: TinyEngine, n: int) -> list[asyncio.Task[str]]:
    """n streams that hold n slots until `engine.gate` is set (the test decides when, not a timer)."""
    engine.close_gate()
    tasks = [asyncio.create_task(stream_text(c, max_tokens=10_000, user=HOLD)) for _ in range(n)]
    await _until(lambda: engine.held >= n, f"{n} held streams")
    return tasks


async def _queued(gw: Any, n: int) -> None:
    """Waits until n requests wait in the gateway's admission queue."""
    await _until(lambda: gw.gateway.admission.queue.count >= n, f"{n} queued requests")


async def _heavy_then_fresh(c: openai.AsyncOpenAI, gw: Any, engine: TinyEngine) -> list[Any]:
    """With the only slot held: a "heavy" session's request queues, then a "fresh" one's; then the
    slot frees. Returns the `user` of the two requests in the order the engine got them."""
    hold = await _fill(c, engine, 1)
    heavy = asyncio.create_task(stream_text(c, extra_headers={"x-switchyard-session": "heavy"}, user="heavy"))
    await _queued(gw, 1)
    fresh = asyncio.create_task(stream_text(c, extra_headers={"x-switchyard-session": "fresh"}, user="fresh"))
    await _queued(gw, 2)
    engine.gate.set()
    await asyncio.gather(*hold, heavy, fresh)
    return [b.get("user") for b in engine.bodies[-2:]]


async def test_interactive_overtakes_queued_batch(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=10, itl_s=0.05)
    gw = await gateway_factory(config(engine, 1))
    c, batch = client(gw), client(gw, KEY_BATCH)
    hold = await _fill(c, engine, 1)
    order: list[str] = []

    async def one(who: str, cl: openai.AsyncOpenAI) -> None:
        await stream_text(cl, user=who)
        order.append(who)

    queued = [asyncio.create_task(one(f"batch-{i}", batch)) for i in range(3)]
    await _queued(gw, 3)
    queued.append(asyncio.create_task(one("interactive", c)))  # arrives last
    await _queued(gw, 4)
    engine.gate.set()
    await asyncio.gather(*hold, *queued)
    assert order[0] == "interactive", order
    assert [b["user"] for b in engine.bodies[1:]][0] == "interactive"


async def test_a_fresh_session_overtakes_a_heavy_one(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=40, itl_s=0.01)
    gw = await gateway_factory(config(engine, 1))
    c = client(gw)
    for _ in range(3):  # the heavy session has consumed tokens already
        await stream_text(c, max_tokens=40, extra_headers={"x-switchyard-session": "heavy"})
    await settled(gw)
    served = await _heavy_then_fresh(c, gw, engine)
    assert served == ["fresh", "heavy"], served


async def test_fcfs_keeps_arrival_order(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=40, itl_s=0.01)
    gw = await gateway_factory(config(engine, 1, {"fairness": {"policy": "fcfs"}}))
    c = client(gw)
    for _ in range(3):
        await stream_text(c, max_tokens=40, extra_headers={"x-switchyard-session": "heavy"})
    await settled(gw)
    served = await _heavy_then_fresh(c, gw, engine)
    assert served == ["heavy", "fresh"], served


async def test_a_starved_request_is_promoted(tiny, gateway_factory) -> None:
    promote = 2.0
    engine = await tiny(tokens=40, itl_s=0.01)
    gw = await gateway_factory(config(engine, 1, {"fairness": {"promote_after_s": promote}}))
    c = client(gw)
    for _ in range(3):
        await stream_text(c, max_tokens=40, extra_headers={"x-switchyard-session": "heavy"})
    await settled(gw)
    hold = await _fill(c, engine, 1)
    heavy = asyncio.create_task(stream_text(c, extra_headers={"x-switchyard-session": "heavy"}, user="heavy"))
    await _queued(gw, 1)
    queued_at = time.monotonic()
    # six fresh sessions, each held at the engine until the test lets it through
    fresh = [
        asyncio.create_task(stream_text(c, extra_headers={"x-switchyard-session": f"f{i}"}, user=f"{HOLD}-f{i}"))
        for i in range(6)
    ]
    await _queued(gw, 7)
    assert time.monotonic() - queued_at < promote, "the machine is too slow for this test's timing"
    sent = len(engine.bodies)
    engine.step()  # the slot frees before heavy waited promote_after_s: a fresh session overtakes it
    await _until(lambda: len(engine.bodies) == sent + 1 and engine.held == 1, "the first fresh session")
    await asyncio.sleep(max(0.0, queued_at + promote + 0.1 - time.monotonic()))
    engine.step()  # now heavy has waited past promote_after_s: it goes ahead of five fresher sessions
    await _until(lambda: len(engine.bodies) == sent + 2, "the next request")
    engine.gate.set()
    await asyncio.gather(*hold, heavy, *fresh)
    users = [b.get("user") for b in engine.bodies[-7:]]
    assert users.index("heavy") == 1, users


async def test_past_its_deadline_a_request_gets_503_with_retry_after(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=40, itl_s=0.05)
    gw = await gateway_factory(config(engine, 1, {"classes": {"interactive": {"max_wait_s": 0.3}}}))
    c = client(gw)
    hold = await _fill(c, engine, 1)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        await stream_text(c)
    assert 0.25 < time.monotonic() - t0 < 1.5
    assert e.value.status_code == 503 and e.value.code == "queue_timeout"
    assert int(e.value.response.headers["Retry-After"]) >= 1
    with pytest.raises(openai.APIStatusError) as e2:  # a client may ask for a shorter wait
        await stream_text(c, extra_headers={"x-switchyard-max-wait": "0"})
    assert e2.value.code == "queue_timeout"
    engine.gate.set()
    await asyncio.gather(*hold)


async def test_the_bound_sheds_the_lowest_class_newest_first(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=20, itl_s=0.05)
    gw = await gateway_factory(config(engine, 1, {"max_queued": 2}))
    c, batch = client(gw), client(gw, KEY_BATCH)
    hold = await _fill(c, engine, 1)
    b1 = asyncio.create_task(stream_text(batch, user="b1"))
    await _queued(gw, 1)
    b2 = asyncio.create_task(stream_text(batch, user="b2"))
    await _queued(gw, 2)
    i1 = asyncio.create_task(stream_text(c, user="i1"))  # full: the newest batch request is shed for it
    with pytest.raises(openai.APIStatusError) as shed:
        await b2
    engine.gate.set()
    assert shed.value.code == "queue_full"
    assert shed.value.status_code == 503 and shed.value.response.headers["Retry-After"]
    await asyncio.gather(b1, i1, *hold)  # the older batch request and the interactive one are served
    hold2 = await _fill(c, engine, 1)
    hold2 += [asyncio.create_task(stream_text(c, user="i2")) for _ in range(2)]
    await _queued(gw, 2)
    with pytest.raises(openai.APIStatusError) as e:  # full of interactive: a batch arrival is shed itself
        await stream_text(batch)
    assert e.value.code == "queue_full"
    engine.gate.set()
    await asyncio.gather(*hold2)


async def test_a_client_that_leaves_the_queue_is_not_charged(tiny, gateway_factory, tmp_path) -> None:
    engine = await tiny(tokens=20, itl_s=0.05)
    raw = config(engine, 1)
    raw["prices"] = {"chat": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    raw["budgets"] = {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 100.0}],
    }
    gw = await gateway_factory(raw)
    c = client(gw)
    hold = await _fill(c, engine, 1)
    waiting = asyncio.create_task(stream_text(c))
    await _queued(gw, 1)
    waiting.cancel()
    # a FIN is a disconnect once server.half_close_grace_s (0.5 s) has passed
    await _until(lambda: gw.gateway.admission.queue.count == 0, "the cancelled request to leave the queue")
    engine.gate.set()
    await asyncio.gather(*hold)
    await settled(gw)
    report = await gw.gateway.limits.spend(team="research")
    assert report["spend_usd"] == pytest.approx((5 + 20) * 0.001), report  # only the request that ran
    assert report["reserved_usd"] == 0
    assert len(engine.bodies) == 1


async def test_the_keys_ceiling_holds(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=10, itl_s=0.05)
    gw = await gateway_factory(config(engine, 1))
    c, batch = client(gw), client(gw, KEY_BATCH)
    hold = await _fill(c, engine, 1)
    order: list[str] = []

    async def one(who: str, cl: openai.AsyncOpenAI, prio: str) -> None:
        await stream_text(cl, user=who, extra_headers={"x-switchyard-priority": prio})
        order.append(who)

    lowered = asyncio.create_task(one("lowered", c, "batch"))  # a client may lower its own class
    await _queued(gw, 1)
    raised = asyncio.create_task(one("raised", batch, "interactive"))  # ... never raise it past the ceiling
    await _queued(gw, 2)
    normal = asyncio.create_task(one("normal", c, "interactive"))
    await _queued(gw, 3)
    engine.gate.set()
    await asyncio.gather(*hold, lowered, raised, normal)
    assert order == ["normal", "lowered", "raised"], order
    with pytest.raises(openai.BadRequestError):
        await stream_text(c, extra_headers={"x-switchyard-priority": "urgent"})


@pytest.mark.parametrize("field,expected", [(None, None), ("vllm", (0, 10)), ("sglang", (20, 10))])
async def test_the_class_reaches_the_engine_only_when_configured(tiny, gateway_factory, field, expected) -> None:
    engine = await tiny(tokens=2, itl_s=0.01)
    gw = await gateway_factory(config(engine, 4, **({"priority_field": field} if field else {})))
    await stream_text(client(gw))
    await stream_text(client(gw, KEY_BATCH))
    got = tuple(b.get("priority") for b in engine.bodies)
    assert got == ((None, None) if expected is None else expected)
    if expected is None:
        assert all("priority" not in b for b in engine.bodies)


async def test_a_learned_limit_queues_at_the_gateway_instead_of_in_the_engine(tiny, gateway_factory) -> None:
    engine = await tiny(tokens=5, itl_s=0.02, slots=4)  # 4 run at once; more wait inside the engine
    raw = config(engine, 64)
    raw["backends"][0].pop("max_concurrency")
    raw["backends"][0]["adaptive_concurrency"] = {"initial": 32, "min": 2, "max": 64, "target_ttfb_s": 0.1}
    gw = await gateway_factory(raw)
    c = client(gw)
    for _ in range(3):  # bursts: the engine's queueing shows in the time to first byte
        results = await asyncio.gather(*(stream_text(c) for _ in range(60)), return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)]
    learned = gw.gateway.backends["e0"].max_concurrency
    assert learned is not None and learned < 32, learned  # cut toward what the engine really runs
    engine.peak = 0
    await asyncio.gather(*(stream_text(c) for _ in range(60)))
    assert engine.peak < 20  # of 60 sent at once (the initial limit was 32): the rest waited in the gateway


async def test_attained_service_is_shared_between_gateways_through_redis(tiny, gateway_factory, tmp_path) -> None:
    import os
    import uuid

    engine = await tiny(tokens=40, itl_s=0.01)
    redis = {
        "url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "key_prefix": f"sy-{uuid.uuid4().hex[:8]}:",
    }
    a = await gateway_factory({**config(engine, 1), "redis": redis})
    b = await gateway_factory({**config(engine, 1), "redis": redis})
    for _ in range(3):  # the heavy session consumes through gateway A ...
        await stream_text(client(a), max_tokens=40, extra_headers={"x-switchyard-session": "heavy"})
    await settled(a)
    service = b.gateway.admission.service  # the shared figure is written by a background Lua call
    await _until_async(lambda: service.get("research|heavy"), "the heavy session's figure in Redis")
    # ... and gateway B, which never served it, puts it behind a fresh session
    served = await _heavy_then_fresh(client(b), b, engine)
    assert served == ["fresh", "heavy"], served
