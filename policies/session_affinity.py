"""session-affinity: the same session goes to the same deployment (its KV cache is there).

Session id (`session_of`): the `x-switchyard-session` header, else the OpenAI `user` field
(gateway/request.py). Requests of the Responses / Messages APIs (gateway/apis) also read what agents
send: Claude Code's `x-claude-code-session-id` header, Codex's `session-id` / `session_id` headers,
Anthropic's `metadata.user_id` (Claude Code puts its session in it: JSON with `session_id`, or
`user_..._session_<uuid>`), the Responses `prompt_cache_key`, then `user`.
Placement is consistent hashing with bounded loads (Mirrokni et al.): each deployment owns
`virtual_nodes` points on a 64-bit ring; a session starts at its hash and walks clockwise to the
first candidate whose in-flight count is under ceil(c x (total + 1) / n), c = `load_factor`, so
no deployment takes more than c x the average and a hot session cannot overload one engine.

The deployment chosen is pinned to the session. While the pin is a candidate (healthy, breaker
closed, has room) and under the bound, the session stays; otherwise it moves and *stays moved*
(the new deployment holds its cache now), counted in switchyard_session_moves_total. Requests
without a session id go to the least active deployment.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from policies.base import BasePolicy
from policies.least_active import LeastActive
from policies.options import SessionAffinityOptions

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


API_SESSION_HEADERS = ("x-switchyard-session", "x-claude-code-session-id", "session-id", "session_id")


def session_of(headers: Any, payload: dict[str, Any]) -> str | None:
    """The session id of a Responses / Messages request (the module doc lists the sources, in order)."""
    for name in API_SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return str(value)
    meta = payload.get("metadata")
    user_id = meta.get("user_id") if isinstance(meta, dict) else None
    if isinstance(user_id, str) and user_id:
        return claude_session(user_id)
    for name in ("prompt_cache_key", "user"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def claude_session(user_id: str) -> str:
    """The session inside Claude Code's metadata.user_id (JSON with session_id, or the older
    `user_<hash>_account_<id>_session_<uuid>`); any other value is the session itself."""
    if user_id.startswith("{"):
        try:
            obj = json.loads(user_id)
        except ValueError:
            return user_id
        sid = obj.get("session_id") if isinstance(obj, dict) else None
        return sid if isinstance(sid, str) and sid else user_id
    _, sep, tail = user_id.rpartition("_session_")
    return tail if sep and tail else user_id


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class SessionAffinity(BasePolicy):
    options_model = SessionAffinityOptions

    def __init__(
        self,
        options: SessionAffinityOptions | None = None,
        *,
        alias: str = "",
        metrics: Any = None,
        weights: Any = None,
        **_: object,
    ) -> None:
        self.opts = options or SessionAffinityOptions()
        self._alias, self._metrics = alias, metrics
        self._points: list[int] = []  # sorted ring positions
        self._owners: list[str] = []  # deployment name at each position
        self._known: set[str] = set()
        # hash64(session) -> deployment name (LRU): a fixed-size key per session, whatever its id
        self._pins: OrderedDict[int, str] = OrderedDict()
        self._fallback = LeastActive(weights=weights)

    def _add_to_ring(self, names: set[str]) -> None:
        self._known |= names
        ring = sorted((hash64(f"{name}#{i}"), name) for name in self._known for i in range(self.opts.virtual_nodes))
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]

    def pinned(self, session: str) -> str | None:
        return self._pins.get(hash64(session))

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        session = ctx.session_id
        if not session:
            return self._fallback.choose(candidates, ctx)
        by_name = {d.name: d for d in candidates}
        if not by_name.keys() <= self._known:
            self._add_to_ring(set(by_name))
        bound = math.ceil(self.opts.load_factor * (sum(d.active for d in candidates) + 1) / len(candidates))
        point = hash64(session)
        pin = self._pins.get(point)
        current = by_name.get(pin) if pin is not None else None
        if current is not None and current.active < bound:
            self._pins.move_to_end(point)
            return current
        chosen = self._walk(point, by_name, bound) or min(candidates, key=lambda d: d.active)
        if pin is not None and pin != chosen.name and self._metrics is not None:
            self._metrics.count(self._metrics.session_moves, self._alias)
        self._pins[point] = chosen.name
        self._pins.move_to_end(point)
        if len(self._pins) > self.opts.max_sessions:
            self._pins.popitem(last=False)
        return chosen

    def _walk(self, point: int, by_name: dict[str, "Deployment"], bound: int) -> "Deployment | None":
        n = len(self._points)
        start = bisect.bisect(self._points, point)
        seen: set[str] = set()
        for k in range(n):
            name = self._owners[(start + k) % n]
            if name in seen:
                continue
            seen.add(name)
            d = by_name.get(name)
            if d is not None and d.active < bound:
                return d
            if len(seen) == len(self._known):
                break
        return None
