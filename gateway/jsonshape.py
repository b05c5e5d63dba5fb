"""Shapes of JSON the gateway refuses before acting on a body: nesting deeper than a bound, and
duplicate keys. Both checks cost one orjson serialization and two byte counts (no Python walk over
the body), so they run on every request.

Depth: orjson reads 1024 levels but writes only 254, and every later step that walks or
re-serializes the body (cache keys, token estimates, the upstream body) failed (500) on deep
input. The parsed body is serialized inside `254 - max_depth` levels of lists: orjson refuses past
254 levels, so that serialization fails exactly when the body is nested deeper than `max_depth`.

Duplicate keys: orjson keeps the last value, while the body is forwarded byte for byte to an
upstream that may read the first: the gateway would check permissions, limits and cache keys on one
`model` / `max_tokens` / `content` while the engine acts on another. So any duplicate key, at any
level, is refused. Every key is followed by exactly one colon, and a colon inside a string is
written as is (or as the escape \\u003a); orjson writes colons inside strings as is. So, unless the
body escapes a colon, the body has more colons than its serialization exactly when some key was
written twice. Only then is the body parsed again with the standard library, pairs kept, to name it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

ORJSON_MAX_DEPTH = 254  # orjson.dumps refuses deeper structures (JSONEncodeError)


class TooDeep(ValueError):
    pass


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


_chains: dict[int, tuple[list[Any], list[Any]]] = {}


def _chain(levels: int) -> tuple[list[Any], list[Any]]:
    """`levels` nested one-item lists, built once: (outermost, innermost)."""
    if levels not in _chains:
        outer: list[Any] = [None]
        inner = outer
        for _ in range(levels - 1):
            nxt: list[Any] = [None]
            inner[0] = nxt
            inner = nxt
        _chains[levels] = (outer, inner)
    return _chains[levels]


def check(body: bytes, payload: Any, max_depth: int) -> None:
    """Raise TooDeep or DuplicateKey; `payload` is `body` as parsed by orjson. Call it on the event
    loop thread (the list chain is shared)."""
    if not 0 < max_depth < ORJSON_MAX_DEPTH:
        raise ValueError(f"max_depth must be 1..{ORJSON_MAX_DEPTH - 1}")
    outer, inner = _chain(ORJSON_MAX_DEPTH - max_depth)
    inner[0] = payload
    try:
        written = orjson.dumps(outer)
    except orjson.JSONEncodeError:
        raise TooDeep(max_depth) from None
    finally:
        inner[0] = None
    escaped_colon = b"\\u00" in body and (b"\\u003a" in body or b"\\u003A" in body)
    if body.count(b":") == written.count(b":") and not escaped_colon:
        return
    json.loads(body, object_pairs_hook=_no_duplicates)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKey(k)
            seen.add(k)
    return out
