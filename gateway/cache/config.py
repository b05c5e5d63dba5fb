"""`[cache]`: exact and semantic response caches, with per-model overrides.

[cache]                       # absent = no caching at all
exact = true
semantic = false
scope = "team"                # global | team | key | session
ttl_s = 3600
[cache.models."llama-3.1-8b"] # any field above (and the per-model ones below) for one alias
semantic = true
threshold = 0.9
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):  # gateway.config imports this module, so its Strict cannot be imported here
    model_config = ConfigDict(extra="forbid", frozen=True)


Scope = Literal["global", "team", "key", "session"]


class ModelCacheConfig(Strict):
    """Per-model overrides: every field unset falls back to the `[cache]` value."""

    exact: bool | None = None
    semantic: bool | None = None
    scope: Scope | None = None
    ttl_s: float | None = Field(None, gt=0)
    threshold: float | None = Field(None, gt=0, le=1)
    cache_length_finish: bool | None = None
    cache_nondeterministic: bool | None = None
    count_hits_toward_tpm: bool | None = None


class CacheConfig(Strict):
    exact: bool = Field(True, description="exact cache on for every model")
    semantic: bool = Field(False, description="semantic cache (off by default; enable per model)")
    scope: Scope = Field("team", description="who shares entries: global | team | key | session")
    ttl_s: float = Field(3600.0, gt=0)
    store: Literal["memory", "redis"] = Field(
        "memory", description="exact entries: this process, or [redis] (shared by replicas)"
    )
    max_bytes: int = Field(256 * 1024 * 1024, gt=0, description="memory store: LRU bound on cached bodies")
    max_entry_bytes: int = Field(1024 * 1024, gt=0, description="larger answers are not cached")
    threshold: float = Field(0.9, gt=0, le=1, description="semantic: least cosine similarity for a hit")
    cache_length_finish: bool = Field(False, description="also cache answers cut by max_tokens (finish_reason length)")
    cache_nondeterministic: bool = Field(False, description="also cache temperature > 0 without seed, or n > 1")
    count_hits_toward_tpm: bool = Field(False, description="a hit's tokens count toward token limits")
    embedder: str = Field(
        "local", description="`local` (all-MiniLM-L6-v2 in process) or an embeddings model alias of this gateway"
    )
    semantic_max_entries: int = Field(100_000, gt=0, description="semantic index bound (oldest evicted)")
    semantic_batch: int = Field(32, gt=0, description="most texts embedded in one batch")
    semantic_max_chars: int = Field(
        512,
        gt=0,
        le=1024,
        description="a longer last user text is never matched or kept semantically (the model reads 256 tokens)",
    )
    semantic_timeout_s: float = Field(0.5, gt=0, description="a slower semantic lookup is given up (a miss)")
    models: dict[str, ModelCacheConfig] = {}

    def for_model(self, alias: str) -> "ModelSettings":
        o = self.models.get(alias)

        def pick(name: str) -> Any:
            v = getattr(o, name) if o is not None else None
            return getattr(self, name) if v is None else v

        return ModelSettings(
            exact=pick("exact"),
            semantic=pick("semantic"),
            scope=pick("scope"),
            ttl_s=pick("ttl_s"),
            threshold=pick("threshold"),
            cache_length_finish=pick("cache_length_finish"),
            cache_nondeterministic=pick("cache_nondeterministic"),
            count_hits_toward_tpm=pick("count_hits_toward_tpm"),
        )


class ModelSettings(Strict):
    """The resolved settings of one alias (built once per alias, see phase.py)."""

    exact: bool
    semantic: bool
    scope: Scope
    ttl_s: float
    threshold: float
    cache_length_finish: bool
    cache_nondeterministic: bool
    count_hits_toward_tpm: bool


def cross_check(raw: dict[str, Any], models: set[str]) -> list[tuple[str, str]]:
    """References from `[cache]` to model aliases (called by gateway.config.cross_check)."""
    cache = raw.get("cache")
    if not isinstance(cache, dict):
        return []
    problems = []
    per_model = cache.get("models")
    for name in per_model if isinstance(per_model, dict) else []:
        if name not in models:
            problems.append((f"cache.models.{name}", f"no model named {name!r}"))
    embedder = cache.get("embedder")
    if isinstance(embedder, str) and embedder != "local" and embedder not in models:
        problems.append(("cache.embedder", f"`local` or an embeddings model alias; no model named {embedder!r}"))
    return problems
