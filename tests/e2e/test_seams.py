"""The seams of the request path (issue 12): one deployment object per engine and model whatever the
aliases, a lifecycle that starts and stops each part once, settling after the client has its answer,
and a reload that works with every section configured, under streaming load."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from gateway.runtime import Gateway
from gateway.server import start_gateway
from tests.conftest import KEY_ALL, gateway_config, sdk, to_config
from tests.e2e.test_reload import ADMIN, chat_on, post_reload, write
from tests.limits.helpers import settled

MSG = [{"role": "user", "content": "hello"}]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def two_aliases(engines: list[Any]) -> dict[str, Any]:
    """Aliases "chat" and "chat-b" both on upstream-llama of e0 and e1."""
    raw = gateway_config(engines)
    raw["models"].append(
        {"name": "chat-b", "deployments": [{"backend": f"e{i}", "model": "upstream-llama"} for i in range(2)]}
    )
    return raw


async def test_two_aliases_on_one_engine_share_one_deployment(engine_factory, gateway_factory) -> None:
    engines = [await engine_factory(itl_s=0.05, output_tokens=40) for _ in range(2)]
    gw = await gateway_factory(two_aliases(engines))
    a, b = gw.gateway.router.get("chat"), gw.gateway.router.get("chat-b")
    assert a is not None and b is not None
    assert [d for d in a.deployments] == [d for d in b.deployments]  # the same objects
    assert all(x is y for x, y in zip(a.deployments, b.deployments))
    client = sdk(gw)
    # three streams through "chat" land on e0 and e1; least-active for "chat-b" must see them
    streams = []
    for _ in range(3):
        s = await client.chat.completions.with_raw_response.create(
            model="chat", messages=MSG, stream=True, max_tokens=40
        )
        streams.append(s)
    busy = {name: d.active for name, d in ((d.name, d) for d in a.deployments)}
    assert sum(busy.values()) == 3
    quieter = min(busy, key=lambda n: busy[n])
    raw = await client.chat.completions.with_raw_response.create(model="chat-b", messages=MSG, max_tokens=2)
    assert raw.headers["x-switchyard-deployment"] == quieter
    for s in streams:
        async for _ in s.parse():
            pass
    async with httpx.AsyncClient() as http:  # one breaker row per engine and model, not per alias
        r = await http.get(f"{gw.base}/admin/breakers", headers={"Authorization": f"Bearer {KEY_ALL}"})
    if r.status_code == 200:
        names = [row["deployment"] for row in r.json()["deployments"]]
        assert len(names) == len(set(names))
    assert len(gw.gateway.resilience.deployments) == 3  # e0, e1 upstream-llama + e0 upstream-embedder


class _CountingPhase:
    name = "counting"

    def __init__(self) -> None:
        self.started = self.closed = self.stopped = 0

    async def on_request(self, ctx):
        return None

    async def on_complete(self, ctx) -> None:
        return None

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1


async def test_start_and_stop_each_part_once(engines) -> None:
    gw = Gateway(to_config(gateway_config(engines)))
    phase = _CountingPhase()
    gw.phases.append(phase)
    await gw.start()
    await gw.stop()
    await gw.stop()  # a second stop does nothing
    assert (phase.started, phase.closed) == (1, 1)


async def test_a_part_that_fails_to_start_stops_only_what_started(engines) -> None:
    gw = Gateway(to_config(gateway_config(engines)))
    before, after = _CountingPhase(), _CountingPhase()

    class Broken(_CountingPhase):
        async def start(self) -> None:
            raise RuntimeError("cannot start")

    gw.phases += [before, Broken(), after]
    try:
        await gw.start()
    except RuntimeError:
        pass
    else:
        raise AssertionError("start should fail")
    assert (before.started, before.closed) == (1, 1)
    assert (after.started, after.closed) == (0, 0)
    assert all(b._session is None or b._session.closed for b in gw.backends.values())  # type: ignore[attr-defined]


class _SlowSettle(_CountingPhase):
    """A settle that takes 0.5 s (a slow cache write, a span export); records the latency the
    request's log line and metrics get."""

    latencies: dict[str, float] = {}

    async def on_complete(self, ctx) -> None:
        await asyncio.sleep(0.5)
        self.latencies[ctx.request_id] = ctx.latency_s


async def test_settling_never_delays_the_answer(engines, gateway_factory) -> None:
    gw = await gateway_factory(gateway_config(engines))
    slow = _SlowSettle()
    gw.gateway.phases.append(slow)
    client = sdk(gw)
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=2)  # warm the connection
    started = time.perf_counter()
    await client.chat.completions.create(
        model="chat", messages=MSG, max_tokens=2, extra_headers={"x-request-id": "slow-1"}
    )
    waited = time.perf_counter() - started
    assert waited < 0.35, f"the client waited {waited:.2f}s for a 0.5s settle"
    await settled(gw)
    assert slow.latencies["slow-1"] <= waited  # the logged latency is what the client saw, no settle in it


async def test_reload_with_every_section_on_under_streaming_load(
    engine_factory, loopback_receiver, tmp_path: Path
) -> None:
    spans: list[bytes] = []

    async def collector(request: web.Request) -> web.Response:
        spans.append(await request.read())
        return web.Response()

    otlp = await loopback_receiver("/v1/traces", collector)
    engines = [await engine_factory(ttft_s=0.05, itl_s=0.03, output_tokens=20), await engine_factory()]
    prefix = f"sy-test-{uuid.uuid4().hex[:8]}:"

    def config(index: int) -> dict[str, Any]:
        raw = chat_on(engines, index)
        raw["models"][0]["deployments"] = [{"backend": f"e{i}", "model": "upstream-llama"} for i in range(2)]
        raw["redis"] = {"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3}
        raw["limits"] = {"rules": [{"scope": "team", "name": "research", "requests_per_minute": 10_000}]}
        raw["budgets"] = {"rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 100.0}]}
        raw["prices"] = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}
        raw["cache"] = {"exact": True}
        raw["tracing"] = {"enabled": True, "endpoint": f"{otlp}/v1/traces", "service_name": "sy-reload"}
        raw["backends"][index]["limits"] = {"requests_per_minute": 100_000}
        return raw

    path = tmp_path / "gw.yaml"
    write(path, config(0))
    gw = await start_gateway(to_config(config(0)), port=0, config_path=str(path))
    try:
        client = sdk(gw, http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30))

        async def one(i: int) -> int:
            stream = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": f"stream {i}"}],
                stream=True,
                max_tokens=20,
                stream_options={"include_usage": True},
            )
            tokens = 0
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            return tokens

        load = [asyncio.create_task(one(i)) for i in range(30)]
        await asyncio.sleep(0.2)  # streams are running
        write(path, config(1))
        status, body = await post_reload(gw.base)
        assert status == 200, body
        more = [asyncio.create_task(one(100 + i)) for i in range(10)]  # and new ones on the new gateway
        tokens = await asyncio.gather(*load, *more)
        assert all(t > 0 for t in tokens)
        await settled(gw)
        for _ in range(100):
            if gw.current.background == set():
                break
            await asyncio.sleep(0.05)
        report = await gw.current.limits.spend(team="research")
        assert abs(report["spend_usd"] - sum(tokens) * 0.001) < 1e-9  # every stream charged, once
        assert report["reserved_usd"] == 0
    finally:
        await gw.stop()
    assert spans  # tracing kept exporting
    assert ADMIN
