"""Every client-chosen value the gateway remembers is bounded: session ids (header or `user`) are
hashed past 128 bytes before anything keeps them, session pins hold a fixed-size digest, and the
semantic cache never keeps (or embeds) a text longer than the model reads."""

from __future__ import annotations

import sys

import orjson
import pytest

from gateway.context import RequestContext
from gateway.request import MAX_SESSION_BYTES, parse_into
from policies.session_affinity import SessionAffinity
from tests.conftest import KEY_ALL, gateway_config
from tests.hostile.raw import request, send
from tests.policies.helpers import ctx, deployment


def parsed(session_header: str | None = None, user: str | None = None) -> RequestContext:
    c = RequestContext(request_id="r", endpoint="chat", started=0.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        body["user"] = user
    parse_into(c, orjson.dumps(body), {"x-switchyard-session": session_header} if session_header else {})
    return c


def test_long_session_ids_are_hashed_short_ones_kept() -> None:
    assert parsed(user="agent-7").session_id == "agent-7"
    assert parsed(session_header="s" * MAX_SESSION_BYTES).session_id == "s" * MAX_SESSION_BYTES
    big = parsed(user="u" * 4_000_000).session_id
    assert big is not None and len(big) <= 64
    assert big == parsed(user="u" * 4_000_000).session_id  # the same id, the same hash
    assert big != parsed(user="u" * 3_999_999 + "v").session_id
    # a header that was not UTF-8 (aiohttp hands it over as surrogates) becomes a hash too
    odd = parsed(session_header="caf\udcc3\udca9-\udcff").session_id
    assert odd is not None and odd.isascii() and odd.encode()


def test_session_pins_keep_a_fixed_size_digest() -> None:
    pool = [deployment(f"e{i}") for i in range(2)]
    policy = SessionAffinity()
    for i in range(20):
        policy.choose(pool, ctx("x" * 100_000 + str(i)))
    kept = sum(sys.getsizeof(k) for k in policy._pins)
    assert kept < 20 * 200, kept
    first = policy.choose(pool, ctx("y" * 100_000))
    assert all(policy.choose(pool, ctx("y" * 100_000)) is first for _ in range(5))


@pytest.mark.parametrize("header", [False, True])
async def test_gateway_keeps_no_big_session_id(gateway_factory, engine_factory, header) -> None:
    raw = gateway_config([await engine_factory()])
    raw["models"][0]["policy"] = "session-affinity"
    gw = await gateway_factory(raw)
    for i in range(5):
        big = f"{i}" + "u" * 1_000_000
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        headers = {"Authorization": f"Bearer {KEY_ALL}", "Content-Type": "application/json"}
        if header:
            headers["x-switchyard-session"] = "s\xff" * 20  # not UTF-8 on the wire
            headers = {k: v.encode("latin-1") for k, v in headers.items()}  # type: ignore[misc]
        else:
            body["user"] = big
        resp = await send(gw.port, request("POST", "/v1/chat/completions", headers, orjson.dumps(body)))
        assert resp.status == 200, resp.body
    policy = gw.gateway.router.get("chat").policy
    assert sum(sys.getsizeof(k) for k in policy._pins) < 5 * 200


@pytest.mark.skipif(
    not __import__("gateway.cache.semantic", fromlist=["x"]).semantic_available(), reason="no `semantic` extra"
)
async def test_semantic_cache_ignores_texts_longer_than_the_model_reads(gateway_factory, engine_factory) -> None:
    """all-MiniLM-L6-v2 reads 256 tokens: two long prompts that differ only past that embed the same,
    so they must never be compared semantically (and are not kept in the index)."""
    from tests.cache.helpers import cache_config, chat
    from tests.conftest import sdk

    gw = await gateway_factory(cache_config([await engine_factory()], {"models": {"chat": {"semantic": True}}}))
    phase = next(p for p in gw.gateway.phases if p.name == "cache")
    await phase.semantic.warm()
    context = "here is some background about the project and its many moving parts. " * 40
    first = [{"role": "user", "content": context + "Now count the lines of the report."}]
    second = [{"role": "user", "content": context + "Now count the words of the report."}]
    client = sdk(gw)
    assert (await chat(client, messages=first))[0] == "miss"
    assert (await chat(client, messages=second))[0] == "miss"
    assert len(phase.semantic) == 0
