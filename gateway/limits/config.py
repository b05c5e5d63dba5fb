"""Config schema of `[limits]`, `[budgets]` and `[prices."model"]` (gateway/limits/)."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):  # as gateway.config.Strict (which imports this module, hence not imported)
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitRule(Strict):
    """One bucket set for every key/team/model matching `name` ("*" = each one separately)."""

    scope: Literal["key", "team", "model"]
    name: str = Field("*", min_length=1, description="key name, team name, model alias, or * (each its own bucket)")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    concurrent: int | None = Field(None, gt=0, description="requests in flight at once")
    burst: float | None = Field(None, gt=0, description="bucket size as a multiple of one minute's rate; default 1")

    @model_validator(mode="after")
    def _some_limit(self) -> "LimitRule":
        if self.requests_per_minute is None and self.tokens_per_minute is None and self.concurrent is None:
            raise ValueError("set at least one of requests_per_minute, tokens_per_minute, concurrent")
        return self


class LimitsConfig(Strict):
    rules: list[LimitRule] = []
    default_max_tokens: int = Field(4096, gt=0, description="output tokens reserved when a request sets no max_tokens")
    max_reserve_tokens: int = Field(
        32768,
        gt=0,
        description=(
            "most output tokens one answer may reserve when the model's context window is unknown (a larger "
            "max_tokens is capped; under a hard budget the upstream is told this cap)"
        ),
    )
    fail_policy: Literal["open", "closed"] = Field(
        "open", description="Redis unreachable: open = local in-memory buckets, closed = 503"
    )
    retry_redis_after_s: float = Field(1.0, gt=0, description="after a Redis failure, use the fallback this long")
    reservation_ttl_s: float = Field(
        60.0,
        gt=0,
        description=(
            "a concurrency slot or budget reservation nobody settles (a killed worker) is released this long after "
            "its process stopped renewing it; a live process renews its running requests' every third of it"
        ),
    )
    settle_delay_s: float = Field(
        0.0,
        ge=0,
        le=0.1,
        description=(
            "Redis: a settle waits up to this long to share the next admission's script call (0 = send at once)"
        ),
    )


class BudgetRule(Strict):
    scope: Literal["team", "key"]
    name: str = Field("*", min_length=1, description="team or key name, or * (each its own budget)")
    period: Literal["daily", "weekly", "monthly", "none"] = "monthly"
    soft_usd: float | None = Field(None, ge=0, description="alert (metric, log, webhook) when spend passes this")
    hard_usd: float | None = Field(None, ge=0, description="refuse requests (429 budget_exceeded) past this")
    webhook_url: str | None = Field(None, description="POSTed a JSON alert when the soft limit is passed")


class BudgetsConfig(Strict):
    timezone: str = "UTC"
    rules: list[BudgetRule] = []
    sqlite_path: str = Field("var/switchyard.db", description="durable spend ledger when no [redis] is set")
    cut_streams: bool = Field(False, description="under a hard budget, cut a stream that passes its reservation")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (IANA name, e.g. Europe/Paris)") from None
        return v


class PriceConfig(Strict):
    """USD per million tokens; overrides (or adds to) litellm's bundled price map."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    context_window: int | None = Field(None, gt=0, description="prompt + max_tokens larger than this get 400")
