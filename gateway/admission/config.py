"""Config schema of `[admission]`: the gateway's admission queue (gateway/admission/queue.py).

Kept apart from gateway/config.py (which imports it); unknown keys are errors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Priority classes, highest first. `background` is below `batch`: the Batch API's lines (sheddable).
CLASSES: tuple[str, ...] = ("interactive", "batch", "background")
PriorityClass = Literal["interactive", "batch", "background"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassConfig(_Strict):
    max_wait_s: float = Field(gt=0, description="longest wait in the queue; past it: 503 + Retry-After")
    reserve_slots: int = Field(
        0,
        ge=0,
        description="a request of this class takes a deployment's slot only while this many of its "
        "max_concurrency stay free for higher classes (none when max_concurrency is not above it)",
    )
    preemptible: bool = Field(
        False,
        description="a request of this class that the gateway itself runs (a Batch API line) is cancelled "
        "and run again later when a request of a higher class waits for its slot",
    )


class SaturationConfig(_Strict):
    """When an engine counts as saturated (besides `backends[].max_concurrency`): its own /metrics
    report a queue or a full KV cache (defaults in the spirit of llm-d's saturation detector)."""

    max_waiting: float = Field(5, ge=0, description="engine's waiting requests at or above this: saturated")
    max_kv_usage: float = Field(0.8, gt=0, le=1, description="engine's KV-cache use at or above this: saturated")
    stale_busy: bool = Field(
        False,
        description="an engine whose load reading is stale takes one request at a time (llm-d: stale = busy); "
        "off: a stale reading falls back to max_concurrency only",
    )


class FairnessConfig(_Strict):
    """Least attained service per session (Autellix PLAS), within a priority class."""

    policy: Literal["las", "fcfs"] = "las"
    half_life_s: float = Field(60.0, gt=0, description="attained service decays with this half-life")
    output_weight: float = Field(2.0, ge=0, description="an output token counts this many times a prompt token")
    wait_credit_tokens_per_s: float = Field(
        200.0, ge=0, description="each second waited offsets this much attained service (head-of-line age)"
    )
    promote_after_s: float = Field(10.0, gt=0, description="a request waiting this long goes first in its class")
    forget_after_s: float = Field(3600.0, gt=0, description="a session idle this long is forgotten")
    max_sessions: int = Field(100_000, gt=0, description="sessions remembered (least recently used forgotten)")


class AdmissionConfig(_Strict):
    enabled: bool = Field(True, description="queue requests when no deployment has room (off: 503 at once)")
    max_queued: int = Field(10_000, gt=0, description="requests waiting at most; beyond: the lowest class, newest shed")
    max_queued_bytes: int = Field(256 * 1024 * 1024, gt=0, description="request bytes waiting at most")
    tick_s: float = Field(0.05, gt=0, description="while requests wait, re-check breakers, quotas, cool-downs")
    classes: dict[PriorityClass, ClassConfig] = {
        "interactive": ClassConfig(max_wait_s=30.0),
        "batch": ClassConfig(max_wait_s=600.0),
        # the Batch API's lines: one slot per deployment stays free, so an interactive arrival
        # rarely waits for a batch line to end (gateway/batch/)
        "background": ClassConfig(max_wait_s=3600.0, reserve_slots=1, preemptible=True),
    }
    saturation: SaturationConfig = SaturationConfig()
    fairness: FairnessConfig = FairnessConfig()

    def reserve(self, cls: str) -> int:
        c = self.classes.get(cls)  # type: ignore[call-overload]
        return c.reserve_slots if c is not None else 0

    def preemptible(self, cls: str) -> bool:
        c = self.classes.get(cls)  # type: ignore[call-overload]
        return c.preemptible if c is not None else False

    def max_wait(self, cls: str) -> float:
        c = self.classes.get(cls)  # type: ignore[call-overload]
        return c.max_wait_s if c is not None else 30.0
