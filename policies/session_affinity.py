"""session-affinity: the same session goes to the same deployment (its KV cache is there).

Session id: the `x-switchyard-session` header, else the OpenAI `user` field (gateway/request.py).
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
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Sequence

from policies.base import BasePolicy
from policies.least_active import LeastActive
from policies.options import SessionAffinityOptions

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class SessionAffinity(BasePolicy):
    options_model = SessionAffinityOptions

    def __init__(self, options: SessionAffinityOptions | None = None, *, alias: str = "", metrics: Any = None, **_: object) -> None:
        self.opts = options or SessionAffinityOptions()
        self._alias, self._metrics = alias, metrics
        self._points: list[int] = []  # sorted ring positions
        self._owners: list[str] = []  # deployment name at each position
        self._known: set[str] = set()
        self._pins: OrderedDict[str, str] = OrderedDict()  # session -> deployment name (LRU)
        self._fallback = LeastActive()

    def _add_to_ring(self, names: set[str]) -> None:
        self._known |= names
        ring = sorted((hash64(f"{name}#{i}"), name) for name in self._known for i in range(self.opts.virtual_nodes))
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]

    def pinned(self, session: str) -> str | None:
        return self._pins.get(session)

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        session = ctx.session_id
        if not session:
            return self._fallback.choose(candidates, ctx)
        by_name = {d.name: d for d in candidates}
        if not by_name.keys() <= self._known:
            self._add_to_ring(set(by_name))
        bound = math.ceil(self.opts.load_factor * (sum(d.active for d in candidates) + 1) / len(candidates))
        pin = self._pins.get(session)
        current = by_name.get(pin) if pin is not None else None
        if current is not None and current.active < bound:
            self._pins.move_to_end(session)
            return current
        chosen = self._walk(session, by_name, bound) or min(candidates, key=lambda d: d.active)
        if pin is not None and pin != chosen.name and self._metrics is not None:
            self._metrics.count(self._metrics.session_moves, self._alias)
        self._pins[session] = chosen.name
        self._pins.move_to_end(session)
        if len(self._pins) > self.opts.max_sessions:
            self._pins.popitem(last=False)
        return chosen

    def _walk(self, session: str, by_name: dict[str, "Deployment"], bound: int) -> "Deployment | None":
        n = len(self._points)
        start = bisect.bisect(self._points, hash64(session))
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
