"""prefix-aware: send a request where its prompt prefix was served recently (that engine's prefix
cache holds it), unless the load is imbalanced. SGLang's cache-aware router, with block hashes in
place of its radix tree.

The prompt (tools first, then each message in order; or a completion's prompt) is cut into blocks
of `block_bytes`, each hashed with the hash of the blocks before it, so one hash stands for the whole
prefix up to its block. Every block of a routed request is remembered against the deployment it
went to (LRU of `max_blocks`, older than `ttl_s` ignored). For a new request:

1. imbalanced (max load - min load > balance_abs_threshold and max > balance_rel_threshold x min,
   load = waiting + running from the engine's metrics or the gateway's in-flight count):
   the least loaded deployment ("balance");
2. else, if the longest match covers at least `cache_threshold` of the prompt: among the
   deployments with that match, the least loaded ("cache");
3. else the least loaded, the one holding the fewest remembered blocks among equals ("spread"),
   which spreads new prefixes over the pool (SGLang: the smallest tree).

Decisions are counted in switchyard_prefix_routing_total{model,decision}. The body is the one the
gateway parsed on arrival (ctx.payload); only the parts are re-serialized to bytes for hashing.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from policies.base import BasePolicy
from policies.options import PrefixAwareOptions

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


def prompt_bytes(payload: dict[str, Any]) -> bytes:
    """The prompt in the order an engine sees it: tools, then messages (or the completion prompt)."""
    parts: list[bytes] = []
    tools = payload.get("tools")
    if tools:
        parts.append(orjson.dumps(tools))
    messages = payload.get("messages")
    if isinstance(messages, list):
        parts.extend(orjson.dumps(m) for m in messages)
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt.encode())
    elif prompt is not None:
        parts.append(orjson.dumps(prompt))
    return b"".join(parts)


def block_hashes(data: bytes, block: int) -> list[bytes]:
    """Chained hashes of the full blocks of `data` (a trailing partial block is not counted)."""
    out: list[bytes] = []
    h = b""
    for off in range(0, len(data) - block + 1, block):
        h = hashlib.blake2b(h + data[off : off + block], digest_size=8).digest()
        out.append(h)
    return out


class PrefixAware(BasePolicy):
    options_model = PrefixAwareOptions

    def __init__(
        self,
        options: PrefixAwareOptions | None = None,
        *,
        alias: str = "",
        metrics: Any = None,
        clock: Any = time.monotonic,
        rng: random.Random | None = None,
        **_: object,
    ) -> None:
        self.opts = options or PrefixAwareOptions()
        self._alias, self._metrics = alias, metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._blocks: OrderedDict[bytes, dict[str, float]] = OrderedDict()  # prefix hash -> {deployment: last served}
        self._held: dict[str, int] = {}  # deployment -> blocks remembered for it

    def matches(self, hashes: list[bytes]) -> dict[str, int]:
        """Deployment name -> number of leading blocks it served recently."""
        now, ttl = self._clock(), self.opts.ttl_s
        found: dict[str, int] = {}
        for i, h in enumerate(hashes):
            entry = self._blocks.get(h)
            alive = [name for name, at in entry.items() if now - at <= ttl] if entry else []
            if not alive:
                break
            for name in alive:
                found[name] = i + 1
        return found

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        o = self.opts
        hashes = block_hashes(prompt_bytes(ctx.payload), o.block_bytes)
        loads = {d.name: d.load().requests for d in candidates}
        hi, lo = max(loads.values()), min(loads.values())
        if hi - lo > o.balance_abs_threshold and hi > o.balance_rel_threshold * lo:
            chosen, decision = self._least_loaded(candidates, loads), "balance"
        else:
            match = self.matches(hashes)
            best = max((match.get(d.name, 0) for d in candidates), default=0)
            if hashes and best and best / len(hashes) >= o.cache_threshold:
                pool = [d for d in candidates if match.get(d.name, 0) == best]
                chosen, decision = self._least_loaded(pool, loads), "cache"
            else:
                low = min(loads.values())
                pool = [d for d in candidates if loads[d.name] == low]
                fewest = min(self._held.get(d.name, 0) for d in pool)
                chosen = self._rng.choice([d for d in pool if self._held.get(d.name, 0) == fewest])
                decision = "spread"
        self._remember(hashes, chosen.name)
        if self._metrics is not None:
            self._metrics.count(self._metrics.prefix_routing, self._alias, decision)
        return chosen

    def _least_loaded(self, pool: Sequence["Deployment"], loads: dict[str, float]) -> "Deployment":
        low = min(loads[d.name] for d in pool)
        best = [d for d in pool if loads[d.name] == low]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _remember(self, hashes: list[bytes], name: str) -> None:
        now, blocks, held = self._clock(), self._blocks, self._held
        added = 0
        for h in hashes:
            entry = blocks.get(h)
            if entry is None:
                blocks[h] = {name: now}
                added += 1
            else:
                added += name not in entry
                entry[name] = now
                blocks.move_to_end(h)
        held[name] = held.get(name, 0) + added
        while len(blocks) > self.opts.max_blocks:
            for gone in blocks.popitem(last=False)[1]:
                held[gone] -= 1
