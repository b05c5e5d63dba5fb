"""Token-bucket arithmetic, shared by the in-memory store and (transcribed) by the Redis Lua script.

A bucket holds up to `capacity` units and refills at `rate` units per second. A request costing
`cost` passes when the bucket holds at least min(cost, capacity) (so a request larger than the whole
bucket can still pass when it is full), and then takes its full cost: the level may go negative,
a debt later requests wait out. Settling adds back (refund) or takes more (extra) units.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BucketState:
    level: float
    at: float  # clock time of `level`


def level_at(state: BucketState | None, now: float, rate: float, capacity: float) -> float:
    if state is None:
        return capacity
    return min(capacity, state.level + max(0.0, now - state.at) * rate)


def wait_for(level: float, cost: float, rate: float, capacity: float) -> float:
    """Seconds until a bucket at `level` can admit `cost` (0 when it can now)."""
    need = min(cost, capacity)
    return 0.0 if level >= need else (need - level) / rate


def full_in(level: float, rate: float, capacity: float) -> float:
    """Seconds until the bucket is full again (x-ratelimit-reset-*)."""
    return max(0.0, capacity - level) / rate


def adjusted(level: float, delta: float, capacity: float) -> float:
    """Level after a settle: + refund (never above capacity) or - extra charge."""
    return min(capacity, level + delta)
