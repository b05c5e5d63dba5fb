"""Faulty upstreams (issue 15): a 200 that is not an answer, a request that makes every engine fail,
usage that cannot be trusted. Upstreams here are small aiohttp apps on loopback, each misbehaving
the way a real engine or proxy in front of one has been seen to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, sdk
from tests.limits.helpers import settled

MSG = [{"role": "user", "content": "hello"}]
GOOD = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


@pytest.fixture
def upstream(fake_upstream: Callable[..., Any]) -> Callable[..., Any]:
    return fake_upstream


def config(urls: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 5},
        "backends": [{"name": f"e{i}", "kind": "vllm", "url": u} for i, u in enumerate(urls)],
        "models": [
            {
                "name": "chat",
                "policy": "round-robin",
                "deployments": [{"backend": f"e{i}", "model": "m"} for i in range(len(urls))],
            }
        ],
        "teams": [{"name": "research"}],
        "keys": [{"name": "k", "team": "research", "sha256": hash_key(KEY_ALL)}],
        "load_signals": {"enabled": False},
        **extra,
    }


async def test_a_200_that_is_not_json_is_a_502_and_is_retried_elsewhere(upstream, gateway_factory) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>502 Bad Gateway (nginx)</body></html>", content_type="text/html")

    async def good(request: web.Request) -> web.Response:
        return web.json_response(GOOD)

    only_html = await gateway_factory(config([await upstream(html)]))
    with pytest.raises(openai.APIStatusError) as e:
        await sdk(only_html).chat.completions.create(model="chat", messages=MSG)
    assert e.value.status_code == 502 and "not JSON" in e.value.message
    both = await gateway_factory(config([await upstream(html), await upstream(good)]))
    for _ in range(4):  # round-robin starts on either: the HTML one is never the answer
        reply = await sdk(both).chat.completions.create(model="chat", messages=MSG)
        assert reply.choices[0].message.content == "ok"


async def test_a_request_that_fails_everywhere_does_not_open_the_breakers_for_everyone(
    upstream, gateway_factory
) -> None:
    calls = {"poison": 0}

    async def engine(request: web.Request) -> web.Response:
        body = await request.json()
        if "poison" in orjson.dumps(body).decode():
            calls["poison"] += 1
            return web.json_response({"error": {"message": "tokenizer crashed"}}, status=500)
        return web.json_response(GOOD)

    raw = config([await upstream(engine) for _ in range(3)])
    raw["resilience"] = {"max_attempts": 3, "breaker": {"consecutive_failures": 3, "open_s": 30}}
    gw = await gateway_factory(raw)
    client = sdk(gw)
    for _ in range(2):  # one team's bad request, twice
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "poison"}])
    assert calls["poison"] == 4  # tried on two engines each, not three: the request is the cause
    for _ in range(6):  # everyone else is still served by every engine
        assert (await client.chat.completions.create(model="chat", messages=MSG)).choices
    states = {d.name: d.breaker.state for d in gw.gateway.router.deployments if d.breaker is not None}
    assert set(states.values()) == {"closed"}, states


async def test_insane_usage_is_not_trusted(upstream, gateway_factory, tmp_path) -> None:
    async def liar(request: web.Request) -> web.Response:
        return web.json_response({**GOOD, "usage": {"prompt_tokens": -1000, "completion_tokens": "many"}})

    raw = config([await upstream(liar)])
    raw["prices"] = {"chat": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    raw["budgets"] = {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 10.0}],
    }
    gw = await gateway_factory(raw)
    reply = await sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=10)
    assert reply.status_code == 200
    await settled(gw)
    report = await gw.gateway.limits.spend(team="research")
    assert report["spend_usd"] > 0  # no negative spend: the reservation (worst case) is kept
    assert report["reserved_usd"] == 0
    assert gw.gateway.backends["e0"].active == 0  # no slot leaked


CAP = 256 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_upstream_body_over_the_cap_is_a_502_and_frees_everything(upstream, gateway_factory, framing) -> None:
    """A whole answer longer than server.max_upstream_body_bytes: 502 in the caller's API shape, not
    retried elsewhere, the upstream connection closed (the engine stops writing), the slot freed;
    the gateway never holds more than the cap of it."""
    seen = {"calls": 0, "cut_off": 0}
    filler = {**GOOD, "choices": [{**GOOD["choices"][0], "message": {"role": "assistant", "content": "x" * (4 * CAP)}}]}

    async def huge(request: web.Request) -> web.StreamResponse:
        seen["calls"] += 1
        body = orjson.dumps(filler)
        if framing == "content-length":
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            for i in range(0, 64 * CAP, 16 * 1024):  # far more than the cap, unless the gateway hangs up
                await resp.write((body * 64)[i : i + 16 * 1024])
                await asyncio.sleep(0)
        except (ConnectionError, RuntimeError):
            seen["cut_off"] += 1
            raise
        return resp

    raw = config([await upstream(huge), await upstream(huge)])
    raw["server"]["max_upstream_body_bytes"] = CAP
    for b in raw["backends"]:
        b["native_apis"] = ["messages"]
    gw = await gateway_factory(raw)
    with pytest.raises(openai.APIStatusError) as e:
        await sdk(gw).chat.completions.create(model="chat", messages=MSG)
    assert e.value.status_code == 502 and e.value.code == "upstream_response_too_large", e.value.body
    with pytest.raises(openai.APIStatusError) as e:  # Responses: translated to chat, the same cap
        await sdk(gw).responses.create(model="chat", input="hi")
    assert e.value.status_code == 502
    ant = anthropic.AsyncAnthropic(base_url=gw.base, api_key=KEY_ALL, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ae:  # Messages: passed through, the same cap
        await ant.messages.create(model="chat", max_tokens=5, messages=MSG)
    assert ae.value.status_code == 502 and ae.value.body["type"] == "error"
    assert seen["calls"] == 3  # one engine each: never retried on the other
    if framing == "chunked":
        for _ in range(100):
            if seen["cut_off"] == 3:
                break
            await asyncio.sleep(0.02)
        assert seen["cut_off"] == 3  # the gateway hung up: the engine stopped writing
    for b in gw.gateway.backends.values():
        assert b.active == 0  # slots freed
    states = {d.name: d.breaker.state for d in gw.gateway.router.deployments if d.breaker is not None}
    assert set(states.values()) == {"closed"}, states  # the request's doing, not the engines'
    metrics = gw.gateway.metrics.render().decode()
    assert 'kind="too_large"' in metrics
