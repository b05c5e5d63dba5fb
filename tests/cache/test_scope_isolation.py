"""Every cache scope includes the team (and the key where it applies): a session id chosen by a
client never lets another team (or another key) read its answers, exact or semantic."""

from __future__ import annotations

import pytest

from gateway.cache import keys
from gateway.cache.semantic import semantic_available
from tests.cache.helpers import cache_config, chat
from tests.conftest import KEY_ALL, KEY_CHAT, sdk

SESSION = {"x-switchyard-session": "shared-session-id"}


def test_every_scope_id_names_the_team() -> None:
    for scope in ("team", "key", "session"):
        a = keys.scope_id(scope, "team-a", "key-1", "s1")
        b = keys.scope_id(scope, "team-b", "key-1", "s1")
        assert a is not None and b is not None and a != b, scope
    # session: also the key; key names cannot be confused with a session id or a team name
    assert keys.scope_id("session", "t", "key-1", "s1") != keys.scope_id("session", "t", "key-2", "s1")
    assert keys.scope_id("key", "t", "a|b", None) != keys.scope_id("key", "t|a", "b", None)
    assert keys.scope_id("session", "t", "k", "x") != keys.scope_id("key", "t", "k", "x")


@pytest.mark.parametrize("scope", ["session", "key", "team"])
async def test_exact_entries_never_cross_teams(gateway_factory, engine_factory, scope) -> None:
    engine = await engine_factory()
    gw = await gateway_factory(cache_config([engine], {"scope": scope}))
    assert (await chat(sdk(gw, KEY_ALL), SESSION))[0] == "miss"
    assert (await chat(sdk(gw, KEY_ALL), SESSION))[0] == "hit-exact"
    assert (await chat(sdk(gw, KEY_CHAT), SESSION))[0] == "miss"  # team ops, same session id
    assert engine.stats.requests_total == 2


@pytest.mark.skipif(not semantic_available(), reason="the `semantic` extra is not installed")
async def test_semantic_entries_never_cross_teams_in_session_scope(gateway_factory, engine_factory) -> None:
    engine = await engine_factory()
    gw = await gateway_factory(cache_config([engine], {"scope": "session", "models": {"chat": {"semantic": True}}}))
    phase = next(p for p in gw.gateway.phases if p.name == "cache")
    await phase.semantic.warm()
    q = [{"role": "user", "content": "How do I reverse a list in Python?"}]
    paraphrase = [{"role": "user", "content": "How can I reverse a Python list?"}]
    assert (await chat(sdk(gw, KEY_ALL), SESSION, messages=q))[0] == "miss"
    assert (await chat(sdk(gw, KEY_ALL), SESSION, messages=paraphrase))[0] == "hit-semantic"
    assert (await chat(sdk(gw, KEY_CHAT), SESSION, messages=paraphrase))[0] == "miss"
