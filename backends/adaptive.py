"""A concurrency limit learned from latency (AIMD), for engines that publish no load metrics.

`backends[].adaptive_concurrency = {initial, min, max, target_ttfb_s}`: the backend's
`max_concurrency` starts at `initial` and moves with every streamed attempt's time to first byte:
below the target it grows by 1/limit (about +1 per limit's worth of requests: additive increase),
above it (the engine queues), or on a timeout / connection error / 5xx / 429, it is cut by `decrease`
(multiplicative decrease), at most once per `target_ttfb_s` so one burst of slow answers counts as
one signal. The admission queue holds what does not fit (gateway/admission/).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AdaptiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    initial: int = Field(8, gt=0)
    min: int = Field(1, gt=0)
    max: int = Field(256, gt=0)
    target_ttfb_s: float = Field(1.0, gt=0, description="time to first byte the engine should keep under")
    decrease: float = Field(0.7, gt=0, lt=1, description="the limit is multiplied by this on a slow or failed answer")

    @model_validator(mode="after")
    def _ordered(self) -> "AdaptiveConfig":
        if not self.min <= self.initial <= self.max:
            raise ValueError("needs min <= initial <= max")
        return self


class AdaptiveLimit:
    def __init__(self, cfg: AdaptiveConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.limit = float(cfg.initial)
        self._last_cut = -float("inf")

    @property
    def value(self) -> int:
        return max(self.cfg.min, int(self.limit))

    def sample(self, ttfb_s: float | None, failed: bool = False) -> int:
        """One attempt's outcome; returns the new limit."""
        slow = failed or (ttfb_s is not None and ttfb_s > self.cfg.target_ttfb_s)
        if slow:
            now = self.clock()
            if now - self._last_cut >= self.cfg.target_ttfb_s:
                self._last_cut = now
                self.limit = max(float(self.cfg.min), self.limit * self.cfg.decrease)
        elif ttfb_s is not None:
            self.limit = min(float(self.cfg.max), self.limit + 1.0 / self.limit)
        return self.value
