"""Keys, the memory store, guards and config: the parts under the phase, without a network."""

from __future__ import annotations

import pytest

from gateway.cache import keys
from gateway.cache.guards import compatible
from gateway.cache.phase import nondeterministic
from gateway.cache.store import MemoryStore
from gateway.config import ConfigError
from tests.cache.helpers import cache_config
from tests.conftest import to_config


def test_key_ignores_field_order_and_delivery_fields() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0, "stream": True}
    b = {
        "temperature": 0,
        "stream": False,
        "user": "u",
        "stream_options": {"include_usage": True},
        "messages": [{"content": "x", "role": "user"}],
        "model": "m",
    }
    ka = keys.exact_key("chat", "t:a", keys.answer_fields(a))
    assert ka == keys.exact_key("chat", "t:a", keys.answer_fields(b))
    assert ka != keys.exact_key("chat", "t:b", keys.answer_fields(a))  # scope
    assert ka != keys.exact_key("completions", "t:a", keys.answer_fields(a))
    assert ka != keys.exact_key("chat", "t:a", keys.answer_fields({**a, "some_future_field": 1}))


def test_semantic_partition_is_everything_but_the_last_user_text() -> None:
    base = {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}]}
    other_text = {**base, "messages": [base["messages"][0], {"role": "user", "content": "q2"}]}
    other_system = {**base, "messages": [{"role": "system", "content": "T"}, base["messages"][1]]}
    part = lambda p: keys.semantic_partition("chat", "g", keys.answer_fields(p))  # noqa: E731
    assert part(base) == part(other_text)
    assert part(base) != part(other_system)
    assert keys.last_user_text(base["messages"]) == "q1"
    assert (
        keys.last_user_text(
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
        )
        == "a\nb"
    )
    assert keys.last_user_text([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]) is None
    assert keys.last_user_text([{"role": "tool", "content": "x"}]) is None


async def test_memory_store_lru_by_bytes_and_ttl() -> None:
    now = [0.0]
    s = MemoryStore(max_bytes=100, clock=lambda: now[0])
    await s.put("ns", "a", b"x" * 40, 10)
    await s.put("ns", "b", b"x" * 40, 10)
    assert await s.get("ns", "a")  # a is now the most recent
    await s.put("ns", "c", b"x" * 40, 10)  # over 100 bytes: b (least recent) goes
    assert await s.get("ns", "b") is None and await s.get("ns", "a") and s.size() == (2, 80)
    now[0] = 11
    assert await s.get("ns", "a") is None
    await s.put("ns", "huge", b"x" * 101, 10)
    assert await s.get("ns", "huge") is None


async def test_memory_store_purge_by_model_team_scope() -> None:
    s = MemoryStore(1000)
    await s.put(keys.namespace("chat", "research", "team"), "1", b"a", 10)
    await s.put(keys.namespace("chat", "ops", "team"), "2", b"a", 10)
    await s.put(keys.namespace("m*[x]", "ops", "key"), "3", b"a", 10)
    assert await s.purge("m*[x]", None, None) == 1
    assert await s.purge(None, "ops", "team") == 1
    assert await s.purge(None, None, None) == 1


@pytest.mark.parametrize(
    "a,b,ok",
    [
        ("Is the server running?", "Is the server not running?", False),
        ("Convert 5 km to miles", "Convert 50 km to miles", False),
        ("Book a flight to Paris", "Book a flight to London", False),
        ("Sort the list in ascending order", "Sort the list in descending order", False),
        ("How do I install numpy?", "How do I uninstall numpy?", False),
        ('Grep for "timeout" in the logs', 'Grep for "deadline" in the logs', False),
        ("How do I undo the last git commit?", "How can I undo my last commit in git?", True),
        ("What is the capital of France?", "What's the capital city of France?", True),
        ("How do I reverse a list in Python?", "how can i reverse a python list?", True),
    ],
)
def test_guards(a: str, b: str, ok: bool) -> None:
    assert compatible(a, b) is ok and compatible(b, a) is ok


def test_nondeterminism_rules() -> None:
    assert nondeterministic({})  # the engine's default temperature samples
    assert nondeterministic({"temperature": 0.2})
    assert not nondeterministic({"temperature": 0.2, "seed": 3})
    assert not nondeterministic({"temperature": 0})
    assert nondeterministic({"temperature": 0, "n": 3})
    assert nondeterministic({"temperature": "hot"})


def test_config_errors_name_their_location(engines) -> None:
    raw = cache_config(engines, {"scope": "planet", "models": {"nope": {"ttl_s": 5}}, "embedder": "ghost", "bogus": 1})
    with pytest.raises(ConfigError) as e:
        to_config(raw)
    where = {loc for loc, _ in e.value.problems}
    assert {"cache.scope", "cache.models.nope", "cache.embedder", "cache.bogus"} <= where
    settings = to_config(cache_config(engines, {"ttl_s": 5, "models": {"chat": {"semantic": True}}})).cache
    assert settings.for_model("chat").semantic and settings.for_model("chat").ttl_s == 5
    assert not settings.for_model("embed").semantic
