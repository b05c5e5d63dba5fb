"""Per-policy options (`models[].policy_options` in config), one pydantic model per policy.

Unknown keys are errors, values are validated; a policy without options takes `NoOptions`, so any
key given to it is reported. Kept free of gateway imports (gateway.config imports this).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(_Options):
    pass


class SessionAffinityOptions(_Options):
    load_factor: float = Field(1.25, ge=1.0, description="c: no deployment above c x the average in-flight load")
    virtual_nodes: int = Field(160, ge=1, le=4096, description="points per deployment on the hash ring")
    max_sessions: int = Field(100_000, ge=1, description="session pins remembered (least recently used dropped)")


class PrefixAwareOptions(_Options):
    block_bytes: int = Field(256, ge=16, description="prompt bytes per hashed block (~64 tokens)")
    cache_threshold: float = Field(0.3, ge=0, le=1, description="route by cache when this share of the prompt matched")
    balance_abs_threshold: float = Field(64, ge=0, description="imbalanced when max - min load is above this ...")
    balance_rel_threshold: float = Field(1.5, ge=1, description="... and max load is above this x min load")
    max_blocks: int = Field(200_000, ge=1, description="block hashes remembered (least recently used dropped)")
    ttl_s: float = Field(600.0, gt=0, description="a block served longer ago than this no longer counts")


class LocalFirstOptions(_Options):
    max_waiting: float = Field(0, ge=0, description="a local engine with more requests waiting is saturated")
    max_kv_usage: float = Field(0.9, gt=0, le=1, description="... or with its KV cache at least this full")
    then: str = Field("least-active", description="policy among the unsaturated local engines (and among remotes)")

    @model_validator(mode="after")
    def _then(self) -> "LocalFirstOptions":
        from policies import POLICIES

        if self.then not in POLICIES or self.then == "local-first":
            raise ValueError(f"then: unknown policy {self.then!r}")
        return self
