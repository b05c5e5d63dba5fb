"""Routing policies end to end: the openai SDK through a real gateway to simulated engines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from gateway.config import ConfigError
from loadtest.engine import EngineConfig, start_engine
from tests.conftest import gateway_config, sdk, to_config
from tests.e2e.test_resilience import metric

SESSION = "x-switchyard-session"


def routed(raw: dict[str, Any], policy: str, **options: Any) -> dict[str, Any]:
    raw["models"][0]["policy"] = policy
    if options:
        raw["models"][0]["policy_options"] = options
    raw["resilience"] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05}
    return raw


async def deployment_of(client: openai.AsyncOpenAI, **kw: Any) -> str:
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    kw.setdefault("max_tokens", 3)
    r = await client.chat.completions.with_raw_response.create(model="chat", **kw)
    return r.headers["x-switchyard-deployment"]


async def test_session_header_and_user_field_pin_a_session(engine_factory, gateway_factory) -> None:
    engines = [await engine_factory() for _ in range(3)]
    gw = await gateway_factory(routed(gateway_config(engines), "session-affinity"))
    client = sdk(gw)
    for agent in range(6):
        by_header = {await deployment_of(client, extra_headers={SESSION: f"agent-{agent}"}) for _ in range(5)}
        by_user = {await deployment_of(client, user=f"agent-{agent}") for _ in range(5)}
        assert len(by_header) == 1 and by_header == by_user  # the header wins over `user`, same id same place
    homes = {await deployment_of(client, extra_headers={SESSION: f"s-{i}"}) for i in range(30)}
    assert len(homes) == 3


async def test_session_moves_off_a_dead_engine_and_stays_moved(engine_factory, gateway_factory) -> None:
    engines = [await engine_factory() for _ in range(2)]
    raw = routed(gateway_config(engines), "session-affinity")
    gw = await gateway_factory(raw)
    client = sdk(gw)
    home = await deployment_of(client, extra_headers={SESSION: "agent-1"})
    dead = engines[int(home[1])]
    port = dead.port
    await dead.stop()
    moved = {await deployment_of(client, extra_headers={SESSION: "agent-1"}) for _ in range(5)}
    assert len(moved) == 1 and moved != {home}
    revived = await start_engine(EngineConfig(seed=9), host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 5
        while not all(b.healthy for b in gw.gateway.backends.values()):
            assert time.monotonic() < deadline, "the engine did not rejoin"
            await asyncio.sleep(0.05)
        assert {await deployment_of(client, extra_headers={SESSION: "agent-1"}) for _ in range(5)} == moved
        assert await metric(gw, "switchyard_session_moves_total", model="chat") == 1
    finally:
        await revived.stop()


async def test_prefix_aware_keeps_a_conversation_on_the_engine_that_caches_it(engine_factory, gateway_factory) -> None:
    engines = [await engine_factory() for _ in range(4)]
    gw = await gateway_factory(routed(gateway_config(engines), "prefix-aware"))
    client = sdk(gw)
    places: dict[int, set[str]] = {}
    for agent in range(8):
        messages = [{"role": "system", "content": f"You are agent {agent}. " + "Work carefully. " * 60}]
        for turn in range(4):
            messages.append({"role": "user", "content": f"Turn {turn}: " + "check the logs. " * 20})
            r = await client.chat.completions.with_raw_response.create(model="chat", messages=messages, max_tokens=8)
            places.setdefault(agent, set()).add(r.headers["x-switchyard-deployment"])
            messages.append({"role": "assistant", "content": r.parse().choices[0].message.content})
    assert all(len(p) == 1 for p in places.values()), places
    assert len({next(iter(p)) for p in places.values()}) == 4  # new conversations spread over the pool
    hits = sum(e.stats.prefix_hits_tokens for e in engines)
    queries = sum(e.stats.prefix_queries_tokens for e in engines)
    assert hits / queries > 0.6
    assert await metric(gw, "switchyard_prefix_routing_total", model="chat", decision="cache") >= 24


async def test_local_first_spills_to_remote_only_when_local_is_full_and_comes_back(
    engine_factory, gateway_factory
) -> None:
    local = await engine_factory(itl_s=0.02, output_tokens=30)
    remote = await engine_factory(profile="remote", price_per_input_token=1e-6, price_per_output_token=2e-6)
    raw = gateway_config([local, remote])
    raw["backends"][0]["max_concurrency"] = 2
    raw["backends"][1]["kind"] = "openai"
    raw = routed(raw, "local-first")
    gw = await gateway_factory(raw)
    client = sdk(gw)
    assert await deployment_of(client) == "e0/upstream-llama"
    where = await asyncio.gather(*(deployment_of(client, max_tokens=30) for _ in range(6)))
    assert where.count("e0/upstream-llama") == 2 and where.count("e1/upstream-llama") == 4
    assert await metric(gw, "switchyard_spillover_total", model="chat") == 4
    assert remote.stats.cost_usd > 0
    assert [await deployment_of(client) for _ in range(3)] == ["e0/upstream-llama"] * 3  # recovered: local again


async def test_local_llama_falls_back_to_gpt_4o_mini(engine_factory, gateway_factory) -> None:
    """All local deployments down, breaker-open or at their limit: the fallback alias answers."""
    l0, l1 = await engine_factory(itl_s=0.05, output_tokens=40), await engine_factory()
    api = await engine_factory(profile="remote")
    raw = gateway_config([l0, l1, api])
    raw["backends"][0]["max_concurrency"] = 1
    raw["backends"][2]["kind"] = "openai"
    raw["models"] = [
        {
            "name": "llama",
            "policy": "local-first",
            "fallbacks": ["gpt-4o-mini"],
            "deployments": [{"backend": "e0", "model": "llama-8b"}, {"backend": "e1", "model": "llama-8b"}],
        },
        {"name": "gpt-4o-mini", "deployments": [{"backend": "e2", "model": "gpt-4o-mini"}]},
    ]
    raw["keys"] = raw["keys"][:1]
    raw["resilience"] = {"backoff_base_s": 0.01, "breaker": {"consecutive_failures": 1, "open_s": 30}}
    gw = await gateway_factory(raw)
    client = sdk(gw)
    await l1.stop()  # e1 down (its probe fails; its first failed request opens its breaker)
    deadline = time.monotonic() + 5
    while gw.gateway.backends["e1"].healthy:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    busy = asyncio.create_task(
        client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    )
    await asyncio.sleep(0.2)  # e0 now at its limit (max_concurrency 1)
    assert gw.gateway.backends["e0"].active == 1
    for stream in (False, True, False):
        r = await client.chat.completions.with_raw_response.create(
            model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=stream
        )
        assert r.headers["x-switchyard-model"] == "gpt-4o-mini"
        assert r.headers["x-switchyard-deployment"] == "e2/gpt-4o-mini"
    assert gw.gateway.router.get("llama").deployments[1].breaker.state == "open"
    await busy
    assert await metric(gw, "switchyard_fallbacks_total", model="llama", fallback="gpt-4o-mini") == 3


def test_policy_options_are_validated_with_their_location() -> None:
    raw = gateway_config([])
    raw["backends"] = [{"name": "e0", "kind": "vllm", "url": "http://127.0.0.1:1/v1"}]
    raw["models"] = [
        {
            "name": "chat",
            "policy": "session-affinity",
            "policy_options": {"load_factor": 0.5, "bogus": 1},
            "deployments": [{"backend": "e0", "model": "m"}],
        },
        {
            "name": "embed",
            "policy": "least-active",
            "policy_options": {"x": 1},
            "deployments": [{"backend": "e0", "model": "m"}],
        },
        {
            "name": "lf",
            "policy": "local-first",
            "policy_options": {"then": "nope"},
            "deployments": [{"backend": "e0", "model": "m"}],
        },
    ]
    with pytest.raises(ConfigError) as e:
        to_config(raw)
    text = e.value.render()
    assert "models[0](chat)" in text and "load_factor" in text and "bogus: unknown key" in text
    assert "models[1](embed)" in text and "x: unknown key" in text
    assert "models[2](lf)" in text and "unknown policy 'nope'" in text


async def test_admin_deployments_show_each_deployments_load(engine_factory, gateway_factory) -> None:
    import aiohttp

    from gateway.keys import hash_key

    vllm, plain = await engine_factory(), await engine_factory(profile="plain")
    raw = gateway_config([vllm, plain], admin_key_sha256=hash_key("sk-admin-routing"))
    raw["backends"][1]["kind"] = "candle"
    gw = await gateway_factory(raw)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.base + "/admin/deployments", headers={"Authorization": "Bearer sk-admin-routing"}) as r:
            rows = {d["name"]: d["load"] for m in (await r.json())["models"] for d in m["deployments"]}
    assert rows["e0/upstream-llama"]["source"] == "metrics" and rows["e0/upstream-llama"]["stale"] is False
    assert rows["e0/upstream-llama"]["kv_usage"] == 0
    assert rows["e1/upstream-llama"] == {
        "waiting": 0,
        "running": 0,
        "kv_usage": None,
        "stale": False,
        "source": "in_flight",
    }
