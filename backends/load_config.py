"""Config schema of `[load_signals]`: scraping the local engines' /metrics for their load.

Kept apart from gateway/config.py (which imports it); unknown keys are errors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LoadMetrics = Literal["auto", "vllm", "sglang", "tgi", "llamacpp", "none"]


class LoadSignalsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval_s: float = Field(1.0, gt=0, description="scrape every local engine's /metrics this often")
    stale_after_s: float = Field(3.0, gt=0, description="an older reading counts as busy (and triggers a scrape)")
    timeout_s: float = Field(0.5, gt=0, description="one scrape")

    @model_validator(mode="after")
    def _stale_after_interval(self) -> "LoadSignalsConfig":
        if self.stale_after_s < self.interval_s:
            raise ValueError("stale_after_s must be at least interval_s")
        return self
