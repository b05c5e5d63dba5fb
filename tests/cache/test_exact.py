"""Exact cache through the gateway, driven by the openai SDK against a simulated engine."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from gateway.keys import hash_key
from loadtest.engine import Fault
from tests.cache.helpers import Q, cache_config, chat, chat_stream, text_of
from tests.conftest import KEY_ALL, KEY_CHAT, sdk

TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]


@pytest.fixture
async def one(engine_factory):
    return await engine_factory()


async def test_identical_request_hits_and_skips_the_engine(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    status1, first = await chat(client)
    status2, second = await chat(client)
    assert (status1, status2) == ("miss", "hit-exact")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert one.stats.requests_total == 1


# Each variation changes something that can change the answer: it must not be served the cached one.
VARIATIONS = [
    {"messages": [{"role": "user", "content": "What is the capital of Spain?"}]},
    {"messages": [{"role": "system", "content": "Answer in French."}, *Q]},
    {"messages": [*Q, {"role": "assistant", "content": "Paris."}, *Q]},
    {"model": "embed"},
    {"tools": TOOLS},
    {"tools": TOOLS, "tool_choice": "none"},
    {"response_format": {"type": "json_object"}},
    {"temperature": 0.5, "seed": 7},
    {"seed": 7},
    {"top_p": 0.5},
    {"max_tokens": 8},
    {"stop": ["\n"]},
    {"presence_penalty": 0.5},
    {"logit_bias": {"42": 5}},
]


@pytest.mark.parametrize("change", VARIATIONS, ids=[",".join(v) for v in VARIATIONS])
async def test_any_answer_changing_field_misses(gateway_factory, one, change) -> None:
    gw = await gateway_factory(cache_config([one], {"cache_length_finish": True}))
    client = sdk(gw)
    assert (await chat(client))[0] == "miss"
    assert (await chat(client, **change))[0] == "miss"
    assert (await chat(client, **change))[0] == "hit-exact"  # and the variant has its own entry
    assert one.stats.requests_total == 2


async def test_delivery_fields_do_not_split_entries(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    await chat(client)
    status, _ = await chat(client, user="someone-else", metadata={"run": "7"}, store=False)
    assert status == "hit-exact"


async def test_teams_never_share_entries(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    assert (await chat(sdk(gw, KEY_ALL)))[0] == "miss"
    assert (await chat(sdk(gw, KEY_CHAT)))[0] == "miss"  # team ops: its own entry
    assert (await chat(sdk(gw, KEY_CHAT)))[0] == "hit-exact"
    assert one.stats.requests_total == 2


async def test_global_scope_shares_and_session_scope_needs_a_session(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one], {"scope": "global", "models": {"embed": {"scope": "session"}}}))
    await chat(sdk(gw, KEY_ALL))
    assert (await chat(sdk(gw, KEY_CHAT)))[0] == "hit-exact"
    client = sdk(gw)
    assert (await chat(client, model="embed"))[0] == "bypass"  # no session id: nothing to scope by
    s1, s2 = {"x-switchyard-session": "agent-1"}, {"x-switchyard-session": "agent-2"}
    assert (await chat(client, s1, model="embed"))[0] == "miss"
    assert (await chat(client, s1, model="embed"))[0] == "hit-exact"
    assert (await chat(client, s2, model="embed"))[0] == "miss"


async def test_entries_expire_after_their_ttl(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one], {"models": {"chat": {"ttl_s": 0.3}}}))
    client = sdk(gw)
    await chat(client)
    assert (await chat(client))[0] == "hit-exact"
    await asyncio.sleep(0.4)
    assert (await chat(client))[0] == "miss"
    assert one.stats.requests_total == 2


async def test_errors_are_never_cached(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    one.set_fault(Fault(kind="status", status=400, body="bad prompt", count=1))
    with pytest.raises(openai.BadRequestError):
        await chat(client)
    status, reply = await chat(client)  # the engine answers now; the error was not replayed
    assert status == "miss" and reply.choices[0].message.content
    assert (await chat(client))[0] == "hit-exact"


async def test_a_cut_stream_is_never_cached(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    one.set_fault(Fault(kind="drop", after_chunks=3, count=1))
    with pytest.raises(openai.APIError):
        await chat_stream(client)
    status, chunks = await chat_stream(client)
    assert status == "miss" and chunks[-1].choices[0].finish_reason == "stop"
    assert (await chat_stream(client))[0] == "hit-exact"
    assert one.stats.requests_total == 2


async def test_answers_cut_by_max_tokens_are_cached_only_when_configured(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one], {"models": {"embed": {"cache_length_finish": True}}}))
    client = sdk(gw)
    for model, second in (("chat", "miss"), ("embed", "hit-exact")):
        _, reply = await chat(client, model=model, max_tokens=3)
        assert reply.choices[0].finish_reason == "length"
        assert (await chat(client, model=model, max_tokens=3))[0] == second


async def test_nondeterministic_requests_bypass_unless_configured(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one], {"models": {"embed": {"cache_nondeterministic": True}}}))
    client = sdk(gw)
    kw: dict[str, Any]
    for kw in ({"temperature": 0.7}, {"n": 2}, {}):
        kw = {"temperature": kw.get("temperature", 1), **kw} if kw else {"temperature": None}
        kw = {k: v for k, v in kw.items() if v is not None}
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=Q, **kw)
        assert raw.headers["x-switchyard-cache"] == "bypass", kw
    await chat(client, model="embed", temperature=0.7)
    assert (await chat(client, model="embed", temperature=0.7))[0] == "hit-exact"
    await chat(client, temperature=0.7, seed=1)  # a seed makes sampling repeatable
    assert (await chat(client, temperature=0.7, seed=1))[0] == "hit-exact"


async def test_request_headers_control_the_cache(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    assert (await chat(client, {"x-switchyard-cache": "no-store"}))[0] == "miss"
    assert (await chat(client))[0] == "miss"  # the no-store answer was not kept
    assert (await chat(client))[0] == "hit-exact"
    assert (await chat(client, {"x-switchyard-cache": "refresh"}))[0] == "bypass"
    assert (await chat(client, {"Cache-Control": "no-cache"}))[0] == "bypass"
    assert one.stats.requests_total == 4  # refresh and no-cache went upstream ...
    assert (await chat(client))[0] == "hit-exact"  # ... and their answers are cached
    with pytest.raises(openai.BadRequestError) as e:
        await chat(client, {"x-switchyard-cache": "forever"})
    assert e.value.code == "invalid_cache_control"


async def test_admin_purge_by_team_and_model(gateway_factory, one) -> None:
    admin = "sk-admin-cache"
    gw = await gateway_factory(cache_config([one], admin_key_sha256=hash_key(admin)))
    research, ops = sdk(gw, KEY_ALL), sdk(gw, KEY_CHAT)
    await chat(research)
    await chat(ops)
    await chat(research, model="embed")
    url, auth = gw.base + "/admin/cache/purge", {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"team": "ops"}) as r:
            assert r.status == 401
        async with s.post(url, json={"team": ["ops"]}, headers=auth) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request"
        async with s.post(url, json={"team": "ops"}, headers=auth) as r:
            assert r.status == 200 and (await r.json())["purged"]["exact"] == 1
    assert (await chat(ops))[0] == "miss"
    assert (await chat(research))[0] == "hit-exact"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"model": "chat"}, headers=auth) as r:
            assert (await r.json())["purged"]["exact"] == 2
    assert (await chat(research))[0] == "miss"
    assert (await chat(research, model="embed"))[0] == "hit-exact"


async def test_metrics_and_no_upstream_tokens_on_hits(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one]))
    client = sdk(gw)
    _, first = await chat(client)
    await chat(client)
    await chat(client)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.base + "/metrics") as r:
            text = await r.text()
    assert 'switchyard_cache_hits_total{kind="exact",model="chat"} 2.0' in text
    assert 'switchyard_cache_misses_total{model="chat"} 1.0' in text
    saved = 2 * first.usage.completion_tokens
    assert f'switchyard_cache_saved_tokens_total{{kind="completion",model="chat"}} {float(saved)}' in text
    # Upstream tokens count the one real answer only.
    assert (
        f'switchyard_tokens_total{{kind="completion",model="chat",team="research"}} {float(first.usage.completion_tokens)}'
        in text
    )


async def test_without_a_cache_section_nothing_is_cached(gateway_factory, one) -> None:
    from tests.conftest import gateway_config

    gw = await gateway_factory(gateway_config([one]))
    raw = await sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=Q, temperature=0)
    raw2 = await sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=Q, temperature=0)
    assert "x-switchyard-cache" not in raw.headers and "x-switchyard-cache" not in raw2.headers
    assert one.stats.requests_total == 2
    assert text_of([]) == ""


class _Recorder:
    """Stands where a limits phase would (before the cache) and keeps what it would charge."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[Any, int, int]] = []

    async def on_request(self, ctx):
        return None

    async def on_complete(self, ctx) -> None:
        self.seen.append((ctx.log_fields.get("cache"), ctx.usage.prompt_tokens, ctx.usage.completion_tokens))


async def test_a_hit_charges_no_tokens_unless_configured(gateway_factory, one) -> None:
    gw = await gateway_factory(cache_config([one], {"models": {"embed": {"count_hits_toward_tpm": True}}}))
    recorder = _Recorder()
    gw.gateway.phases.insert(0, recorder)
    client = sdk(gw)
    _, first = await chat(client)
    await chat(client)
    await chat(client, model="embed")
    await chat(client, model="embed")
    p, c = first.usage.prompt_tokens, first.usage.completion_tokens
    assert recorder.seen[0] == ("miss", p, c)
    assert recorder.seen[1] == ("hit-exact", 0, 0)  # limits and budgets charge nothing
    assert recorder.seen[3] == ("hit-exact", p, c)  # count_hits_toward_tpm: the cached usage
    saved = gw.gateway.metrics.registry.get_sample_value(
        "switchyard_cache_saved_tokens_total", {"model": "chat", "kind": "completion"}
    )
    assert saved == c  # the hit knows what the answer cost when it was made
