"""Config schema of `[resilience]`: retries, retry budget, circuit breakers (also per backend).

Kept apart from gateway/config.py (which imports these) so the section stays one readable unit.
Same rules: unknown keys are errors, values are validated.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerConfig(_Strict):
    enabled: bool = True
    window_s: float = Field(10.0, gt=0, description="sliding window for the failure rate")
    failure_rate: float = Field(0.5, gt=0, le=1, description="trip when failures/calls reaches this ...")
    min_calls: int = Field(10, ge=1, description="... with at least this many calls in the window")
    consecutive_failures: int = Field(5, ge=1, description="or after this many failures in a row")
    open_s: float = Field(5.0, gt=0, description="first cool-down before a half-open probe")
    open_multiplier: float = Field(2.0, ge=1, description="cool-down growth per repeated trip")
    max_open_s: float = Field(60.0, gt=0, description="cool-down cap")
    half_open_max_probes: int = Field(1, ge=1, description="probe requests admitted at once when half-open")
    half_open_successes: int = Field(2, ge=1, description="successful probes that close the breaker")


class ResilienceConfig(_Strict):
    max_attempts: int = Field(3, ge=1, description="attempts per request, the first included")
    retry_on: list[int] = Field(
        [429, 500, 502, 503, 504],
        description="upstream statuses that are retried (connection errors and timeouts always are)",
    )
    backoff_base_s: float = Field(0.05, ge=0, description="full-jitter backoff: uniform(0, min(cap, base*2^n))")
    backoff_cap_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(
        10.0, ge=0, description="longest Retry-After the gateway waits itself; longer ones go to the client"
    )
    budget_ratio: float = Field(0.2, ge=0, description="retries allowed as a share of recent requests")
    budget_min_retries: int = Field(10, ge=0, description="retries always allowed per budget window (low traffic)")
    budget_window_s: float = Field(10.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("retry_on")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 400 <= s <= 599]
        if bad:
            raise ValueError(f"only 4xx/5xx statuses can be retried, got {bad}")
        return v
