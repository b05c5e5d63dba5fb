"""Semantic cache: paraphrases hit, negations / other entities / other numbers miss, and nothing
ever matches across system prompts, earlier turns or parameters (the partition)."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")  # the `semantic` extra (CI installs it)

from gateway.cache.semantic import LocalEmbedder, SemanticCache, semantic_available  # noqa: E402
from tests.cache.helpers import cache_config, chat, chat_stream, text_of  # noqa: E402
from tests.cache.pairs import PAIRS  # noqa: E402
from tests.conftest import sdk  # noqa: E402

needs_model = pytest.mark.skipif(not semantic_available(), reason="the `semantic` extra is not installed")
THRESHOLD = 0.9  # the default of cache.threshold


def user(text: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


@needs_model
async def test_labelled_pairs_precision_and_recall() -> None:
    cache = SemanticCache(1000, 32, LocalEmbedder())
    try:
        tp = fp = fn = 0
        wrong = []
        for i, (cached, asked, same) in enumerate(PAIRS):
            part = f"pair-{i}"
            cache.add(part, "m||team", await cache.embed(cached), cached, b"{}", 60)
            hit = await cache.lookup(part, await cache.embed(asked), asked, THRESHOLD) is not None
            tp += hit and same
            fp += hit and not same
            fn += same and not hit
            if hit != same:
                wrong.append((cached, asked))
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        print(f"semantic pairs: {len(PAIRS)}, precision {precision:.2f}, recall {recall:.2f}, wrong: {wrong}")
        assert precision == 1.0  # a wrong hit corrupts an agent's work: none allowed on this set
        assert recall >= 0.9
    finally:
        cache.close()


@pytest.fixture
async def semantic_gw(gateway_factory, engine_factory):
    engine = await engine_factory()
    gw = await gateway_factory(cache_config([engine], {"models": {"chat": {"semantic": True}}}))
    phase = next(p for p in gw.gateway.phases if p.name == "cache")
    await phase.semantic.warm()
    return gw, engine


@needs_model
async def test_paraphrase_hits_through_the_gateway(semantic_gw) -> None:
    gw, engine = semantic_gw
    client = sdk(gw)
    _, first = await chat(client, messages=user("How do I reverse a list in Python?"))
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=user("How can I reverse a Python list?"), temperature=0
    )
    assert raw.headers["x-switchyard-cache"] == "hit-semantic"
    assert float(raw.headers["x-switchyard-cache-similarity"]) >= THRESHOLD
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    status, chunks = await chat_stream(client, messages=user("How can I reverse a list in Python?"))
    assert status == "hit-semantic" and text_of(chunks) == first.choices[0].message.content
    assert engine.stats.requests_total == 1


@needs_model
async def test_negations_and_other_entities_miss(semantic_gw) -> None:
    gw, _ = semantic_gw
    client = sdk(gw)
    await chat(client, messages=user("Is the server running?"))
    await chat(client, messages=user("What is the capital of France?"))
    assert (await chat(client, messages=user("Is the server not running?")))[0] == "miss"
    assert (await chat(client, messages=user("What is the capital of Germany?")))[0] == "miss"


@needs_model
async def test_never_across_system_prompts_turns_or_parameters(semantic_gw) -> None:
    gw, _ = semantic_gw
    client = sdk(gw)
    q = "How do I reverse a list in Python?"
    await chat(client, messages=user(q, system="You are a terse assistant."))
    assert (await chat(client, messages=user(q, system="You answer in French.")))[0] == "miss"
    assert (await chat(client, messages=user(q)))[0] == "miss"  # no system prompt at all
    earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert (await chat(client, messages=earlier + user(q)))[0] == "miss"
    assert (await chat(client, messages=user(q, system="You are a terse assistant."), max_tokens=5))[0] == "miss"
    paraphrase = user("How can I reverse a Python list?", system="You are a terse assistant.")
    assert (await chat(client, messages=paraphrase))[0] == "hit-semantic"


@needs_model
async def test_index_is_bounded_and_purged() -> None:
    cache = SemanticCache(50, 8, LocalEmbedder())
    try:
        rng = np.random.default_rng(0)
        for i in range(120):
            v = rng.standard_normal(384).astype(np.float32)
            await cache.add(f"p{i % 3}", f"m{i % 2}||global", v / np.linalg.norm(v), f"t{i}", b"{}", 60)
        assert len(cache) <= 50
        assert await cache.purge("m0", None, None) > 0
        assert await cache.purge(None, None, None) + 0 >= 0 and len(cache) == 0
    finally:
        cache.close()


async def test_an_embeddings_alias_of_the_gateway_as_embedder(gateway_factory, engine_factory) -> None:
    """The simulated engine's embeddings are a hash of the text: the same question is similarity 1."""
    engine = await engine_factory()
    gw = await gateway_factory(
        cache_config([engine], {"embedder": "embed", "models": {"chat": {"semantic": True, "exact": False}}})
    )
    client = sdk(gw)
    assert (await chat(client))[0] == "miss"
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=user("What is the capital of France?"), temperature=0
    )
    assert raw.headers["x-switchyard-cache"] == "hit-semantic"
    assert float(raw.headers["x-switchyard-cache-similarity"]) > 0.999
    assert (await chat(client, messages=user("Something else entirely")))[0] == "miss"


async def test_a_slow_embedder_costs_the_hit_not_the_request(gateway_factory, engine_factory) -> None:
    import time

    from loadtest.engine import Fault

    engine = await engine_factory()
    gw = await gateway_factory(
        cache_config(
            [engine],
            {"embedder": "embed", "semantic_timeout_s": 0.2, "models": {"chat": {"semantic": True, "exact": False}}},
        )
    )
    engine.set_fault(Fault(kind="delay", delay_s=2.0, paths=["/v1/embeddings"]))
    t0 = time.perf_counter()
    status, reply = await chat(sdk(gw))
    assert status == "miss" and reply.choices[0].message.content
    assert time.perf_counter() - t0 < 1.5
