"""Cache keys: a hash of everything in the request that can change the answer, in a scope.

Everything in the body counts except the fields listed in IGNORED (how the answer is delivered, who
asked), so a field added to the API later is part of the key by default: a wrong hit is worse than
a miss. The body is serialized with sorted keys (orjson) so field order does not matter, then
hashed with blake2b.

The semantic cache's partition is the same hash computed without the last user turn: a semantic
hit is only possible between requests that agree on everything else (model, system prompt, tools,
parameters, earlier turns).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson

# Delivery and bookkeeping fields: the answer is the same whatever their value.
IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})

_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def _digest(obj: Any) -> str:
    return blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=20).hexdigest()


def answer_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in IGNORED}


def scope_id(scope: str, team: str, key_name: str, session_id: str | None) -> str | None:
    """Who shares entries; None when the scope cannot be told (session scope without a session).

    Every scope but `global` names the team, `key` also the key and `session` the team, the key and
    the session id: a session id is chosen by the client, so on its own it would let any caller
    that guesses (or picks) another team's id read that team's answers. The parts are serialized as
    a JSON list and hashed, so no value can pose as another (`a|b` + `c` vs `a` + `b|c`)."""
    if scope == "global":
        return "g"
    if scope == "team":
        parts = [team]
    elif scope == "key":
        parts = [team, key_name]
    elif session_id:
        parts = [team, key_name, session_id]
    else:
        return None
    return scope[0] + ":" + blake2b(orjson.dumps(parts), digest_size=16).hexdigest()


def namespace(model: str, team: str, scope: str) -> str:
    """The readable head of every key, so a purge can select by model, team and scope kind with a
    Redis SCAN pattern (glob characters escaped)."""
    return f"{model.translate(_GLOB)}|{team.translate(_GLOB)}|{scope}"


def exact_key(endpoint: str, scope: str, fields: dict[str, Any]) -> str:
    return _digest([endpoint, scope, fields])


def last_user_text(messages: list[Any]) -> str | None:
    """The text of the last message when it is a user turn (plain string or text parts)."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                return None  # images, audio ...: no semantic match on those
            parts.append(p["text"])
        return "\n".join(parts) or None
    return None


def semantic_partition(endpoint: str, scope: str, fields: dict[str, Any]) -> str:
    """Exact key of everything but the last user turn's content (its other fields still count)."""
    messages = fields["messages"]
    last = {k: v for k, v in messages[-1].items() if k != "content"}
    return _digest(["sem", endpoint, scope, {**fields, "messages": [*messages[:-1], last]}])
