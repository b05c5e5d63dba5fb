"""The cache phase: look up before dispatch (answer a hit at once), store after a good answer.

    on_request: cacheable? (chat/completions, deterministic unless configured, a scope) ->
                exact lookup -> semantic lookup -> hit: answer now (JSON, or SSE replay for a
                streaming request) | miss: ask the forwarders to keep the answer's bytes
    on_complete: a complete 200 answer that finished on its own -> exact store, semantic index

Request header `x-switchyard-cache: no-cache | no-store | refresh` (or `Cache-Control: no-cache` /
`no-store`); response header `x-switchyard-cache: hit-exact | hit-semantic | miss | bypass`, and
`x-switchyard-cache-similarity` on semantic hits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.cache import keys
from gateway.cache.config import CacheConfig, ModelSettings
from gateway.cache.metrics import CacheMetrics
from gateway.cache.replay import from_sse, storable, to_sse
from gateway.cache.store import MemoryStore, RedisStore, Store
from gateway.context import RequestContext, Usage
from gateway.errors import bad_request
from gateway.forward import SSE_HEADERS
from gateway.sse import usage_of_body

if TYPE_CHECKING:
    import numpy as np

    from gateway.cache.semantic import SemanticCache
    from gateway.runtime import Gateway

HEADER = "x-switchyard-cache"
SIMILARITY_HEADER = "x-switchyard-cache-similarity"
CONTROLS = frozenset({"no-cache", "no-store", "refresh"})
STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)
try:
    from redis.exceptions import RedisError

    STORE_ERRORS = (*STORE_ERRORS, RedisError)
except ImportError:  # pragma: no cover
    pass


@dataclass(slots=True)
class _Pending:
    """A miss waiting for its answer."""

    settings: ModelSettings
    ns: str
    key: str
    partition: str | None = None
    text: str | None = None
    vec: "np.ndarray | None" = None
    # The answer as it went to the client (this object is the request's ResponseTap).
    parts: "list[bytes] | None" = None
    body: bytes | None = None

    def on_events(self, data: bytes, count: int) -> None:
        if self.parts is None:
            self.parts = []
        self.parts.append(data)

    def on_body(self, body: bytes) -> None:
        self.body = body

    def answer(self) -> bytes | None:
        return self.body if self.body is not None else (b"".join(self.parts) if self.parts is not None else None)


def controls(headers: Any) -> frozenset[str]:
    if headers is None:
        return frozenset()
    asked = {v.strip().lower() for v in headers.get(HEADER, "").split(",") if v.strip()}
    unknown = asked - CONTROLS
    if unknown:
        raise bad_request(
            f"Unknown {HEADER} value {sorted(unknown)[0]!r}; expected no-cache, no-store or refresh.",
            code="invalid_cache_control",
        )
    cc = {v.strip().lower() for v in headers.get("Cache-Control", "").split(",")}
    return frozenset(asked | (cc & {"no-cache", "no-store"}))


def nondeterministic(payload: dict[str, Any]) -> bool:
    """Sampling without a seed (a missing temperature is the engine's default, 1) or several choices."""
    n = payload.get("n")
    if n not in (None, 1):
        return True
    t = payload.get("temperature", 1)
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return True
    return t > 0 and payload.get("seed") is None


class CachePhase:
    name = "cache"

    def __init__(self, gw: "Gateway", config: CacheConfig) -> None:
        self.gw, self.config = gw, config
        self.metrics = gw.metrics.extension("cache", CacheMetrics)  # one set per registry, across reloads
        self.store: Store
        if config.store == "redis":
            if gw.redis is None:
                raise ValueError('cache.store = "redis" needs a [redis] section')
            self.store = RedisStore(gw.redis, gw.config.redis.key_prefix if gw.config.redis else "switchyard:")
        else:
            self.store = MemoryStore(config.max_bytes)
        unknown = set(config.models) - set(gw.router.aliases())
        if unknown:
            raise ValueError(f"cache.models: no model named {sorted(unknown)[0]!r}")
        self._settings = {alias: config.for_model(alias) for alias in gw.router.aliases()}
        self.semantic: "SemanticCache | None" = None
        if any(s.semantic for s in self._settings.values()):
            # numpy, faiss and torch (the `semantic` extra) load only when a model turns this on.
            from gateway.cache.semantic import GatewayEmbedder, LocalEmbedder, SemanticCache, semantic_available

            if config.embedder == "local":
                if not semantic_available():
                    raise ValueError(
                        "the semantic cache needs the `semantic` extra: pip install 'switchyard[semantic]'"
                    )
                embedder: "LocalEmbedder | GatewayEmbedder" = LocalEmbedder()
            elif gw.router.get(config.embedder) is None:
                raise ValueError(f"cache.embedder: no model named {config.embedder!r} (or `local`)")
            else:
                embedder = GatewayEmbedder(gw.router, config.embedder)
            self.semantic = SemanticCache(config.semantic_max_entries, config.semantic_batch, embedder)
            if isinstance(embedder, LocalEmbedder):
                self.semantic.worker.submit(embedder.load)  # warm before the first request

    # ---- before dispatch -------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> web.StreamResponse | None:
        s = self._settings.get(ctx.model)
        if s is None or not (s.exact or s.semantic) or ctx.endpoint not in ("chat", "completions"):
            return None
        asked = controls(ctx.request_headers)
        if not s.cache_nondeterministic and nondeterministic(ctx.payload):
            self._bypass(ctx, "nondeterministic")
            return None
        p = ctx.principal
        assert p is not None
        scope = keys.scope_id(s.scope, p.team, p.key_name, ctx.session_id)
        if scope is None:
            self._bypass(ctx, "no_scope")
            return None
        fields = keys.answer_fields(ctx.payload)
        team = "" if s.scope == "global" else p.team  # global entries belong to no team
        pending = _Pending(s, keys.namespace(ctx.model, team, s.scope), keys.exact_key(ctx.endpoint, scope, fields))
        look = not (asked & {"no-cache", "refresh"})
        if not look and "no-store" in asked:
            self._bypass(ctx, "header")
            return None
        if look and s.exact:
            t0 = time.perf_counter()
            body = await self._get(pending)
            self.metrics.m._child(self.metrics.lookup, "exact").observe(time.perf_counter() - t0)
            if body is not None:
                return self._hit(ctx, s, body, "exact", None)
        if s.semantic and self.semantic is not None and self.semantic.ready and ctx.endpoint == "chat":
            text = keys.last_user_text(ctx.payload["messages"])
            # Longer texts: the embedding sees only their first 256 tokens (two prompts differing
            # past that would match), and the index would keep client text of any size.
            pending.text = text if text is not None and len(text) <= self.config.semantic_max_chars else None
            if pending.text is not None:
                pending.partition = keys.semantic_partition(ctx.endpoint, scope, fields)
                match = await self._semantic_lookup(pending, look)
                if match is not None:
                    return self._hit(ctx, s, match.body, "semantic", match.similarity)
        if not look:
            self._bypass(ctx, "header", pending)
            return None
        self.metrics.count(self.metrics.misses, ctx.model)
        ctx.log_fields["cache"] = "miss"
        ctx.response_headers[HEADER] = "miss"
        if "no-store" not in asked:
            self._watch(ctx, pending)
        return None

    def _watch(self, ctx: RequestContext, pending: _Pending) -> None:
        """Keep the answer's bytes as they go to the client, to store them in on_complete."""
        ctx.taps.append(pending)
        ctx.phase_state[self.name] = pending

    async def _get(self, pending: _Pending) -> bytes | None:
        try:
            return await self.store.get(pending.ns, pending.key)
        except STORE_ERRORS as e:  # a cache that is down is a miss, never a failed request
            self.gw.log.warning("cache_store_error", op="get", exc_info=e)
            return None

    async def _semantic_lookup(self, pending: _Pending, look: bool) -> Any:
        assert self.semantic is not None and pending.text is not None and pending.partition is not None
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.semantic_timeout_s):
                pending.vec, match = await self.semantic.query(
                    pending.text, pending.partition if look else None, pending.settings.threshold
                )
        except Exception as e:  # the embedder failing or slow costs the hit, not the request
            self.gw.log.warning("cache_semantic_error", exc_info=e)
            pending.vec = None
            return None
        self.metrics.m._child(self.metrics.lookup, "semantic").observe(time.perf_counter() - t0)
        return match

    def _bypass(self, ctx: RequestContext, reason: str, pending: _Pending | None = None) -> None:  # noqa: D401
        self.metrics.count(self.metrics.bypass, ctx.model, reason)
        ctx.log_fields["cache"] = "bypass"
        ctx.response_headers[HEADER] = "bypass"
        if pending is not None:  # refresh / no-cache: answer from upstream, store it
            self._watch(ctx, pending)
        return None

    def _hit(
        self, ctx: RequestContext, s: ModelSettings, body: bytes, kind: str, similarity: float | None
    ) -> web.Response:
        usage = usage_of_body(body) or {}
        saved = Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            known=bool(usage),
        )
        ctx.usage = (
            Usage(prompt_tokens=saved.prompt_tokens, completion_tokens=saved.completion_tokens, known=True)
            if s.count_hits_toward_tpm
            else Usage(known=True)
        )
        status = ctx.log_fields["cache"] = f"hit-{kind}"
        ctx.status = 200
        ctx.response_complete = True
        ctx.first_byte_at = time.perf_counter()
        headers = dict(ctx.response_headers)
        headers[HEADER] = status
        if similarity is not None:
            headers[SIMILARITY_HEADER] = f"{similarity:.4f}"
        m = self.metrics
        m.count(m.hits, ctx.model, kind)
        if saved.known:
            m.count(m.saved_tokens, ctx.model, "prompt", by=saved.prompt_tokens)
            m.count(m.saved_tokens, ctx.model, "completion", by=saved.completion_tokens)
            usd = saved_usd(self.gw, ctx.model, saved)
            if usd:
                m.count(m.saved_usd, ctx.model, by=usd)
        if ctx.stream:
            sse = to_sse(orjson.loads(body), ctx.endpoint, ctx.client_wants_usage)
            return web.Response(body=sse, headers={**headers, **SSE_HEADERS})
        headers["Content-Type"] = "application/json"
        return web.Response(body=body, headers=headers)

    # ---- after the answer --------------------------------------------------------------------
    async def on_complete(self, ctx: RequestContext) -> None:
        pending = ctx.phase_state.get(self.name)
        if not isinstance(pending, _Pending):
            return
        reason, body = self._storable(ctx, pending)
        if reason:
            self.metrics.count(self.metrics.not_stored, ctx.model, reason)
            return
        assert body is not None
        s = pending.settings
        if s.exact:
            try:
                await self.store.put(pending.ns, pending.key, body, s.ttl_s)
                self.metrics.count(self.metrics.stores, ctx.model, "exact")
            except STORE_ERRORS as e:
                self.gw.log.warning("cache_store_error", op="put", exc_info=e)
        if self.semantic is not None and pending.vec is not None and pending.partition and pending.text:
            self.semantic.add(pending.partition, pending.ns, pending.vec, pending.text, body, s.ttl_s)
            self.metrics.count(self.metrics.stores, ctx.model, "semantic")
        self._gauges()

    def _storable(self, ctx: RequestContext, pending: _Pending) -> tuple[str | None, bytes | None]:
        s = pending.settings
        if ctx.status != 200 or ctx.error_type:
            return "error", None
        answer = pending.answer()
        if not ctx.response_complete or answer is None:
            return "incomplete", None
        try:
            if ctx.stream:
                usage = (
                    {
                        "prompt_tokens": ctx.usage.prompt_tokens,
                        "completion_tokens": ctx.usage.completion_tokens,
                        "total_tokens": ctx.usage.prompt_tokens + ctx.usage.completion_tokens,
                    }
                    if ctx.usage.known
                    else None
                )
                obj = from_sse(answer, ctx.endpoint, usage)
                body = orjson.dumps(obj) if obj is not None else b""
            else:
                body = answer
                obj = orjson.loads(body)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return "error", None
        if not storable(obj, s.cache_length_finish):
            return "finish_reason", None
        if len(body) > self.config.max_entry_bytes:
            return "too_large", None
        return None, body

    def _gauges(self) -> None:
        entries, size = self.store.size()
        if entries >= 0:
            self.metrics.entries.labels("exact").set(entries)
            self.metrics.bytes.set(size)
        if self.semantic is not None:
            self.metrics.entries.labels("semantic").set(len(self.semantic))

    async def purge(self, model: str | None, team: str | None, scope: str | None) -> dict[str, int]:
        exact = await self.store.purge(model, team, scope)
        semantic = await self.semantic.purge(model, team, scope) if self.semantic is not None else 0
        self._gauges()
        return {"exact": exact, "semantic": semantic}

    async def close(self) -> None:
        if self.semantic is not None:
            self.semantic.close()


def saved_usd(gw: "Gateway", model: str, saved: Usage) -> float:
    """Cost of the saved tokens at the model's price as the limits feature resolved it (config, else
    litellm's map), or at `[prices."model"]` when no limits phase runs; 0 for a model with no price."""
    from gateway.limits.prices import FREE, from_config  # lazy: the cache does not need limits otherwise

    resolved = getattr(gw.limits, "prices", None) or {}
    price = resolved.get(model)
    if price is None:
        configured = gw.config.prices.get(model)
        price = from_config(configured) if configured is not None else FREE
    return price.cost(saved.prompt_tokens, saved.completion_tokens) / 1e9


def build_cache_phase(gw: "Gateway") -> CachePhase | None:
    return CachePhase(gw, gw.config.cache) if gw.config.cache is not None else None
