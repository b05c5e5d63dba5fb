"""Live counters of one engine (engine.stats) and the histograms behind /metrics."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# vLLM's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class HeaderDict(dict):
    """Request headers as a plain dict (original spelling) with case-insensitive lookups."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((str(k), v) for k, v in (items.items() if hasattr(items, "items") else items))
        self._lower = {k.lower(): k for k in self}

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(self._lower.get(key.lower(), key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lower

    def get(self, key: str, default: Any = None) -> Any:
        real = self._lower.get(key.lower())
        return default if real is None else super().__getitem__(real)


class Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot = +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for le, n in zip(self.buckets, self.counts, strict=False):
            acc += n
            out.append((repr(float(le)), acc))
        out.append(("+Inf", self.count))
        return out


_COUNTERS = (
    "requests_total",
    "completed",
    "cancelled",
    "failed",
    "errors",
    "rate_limited",
    "preempted",
    "prompt_tokens",
    "completion_tokens",
    "prefix_queries_tokens",
    "prefix_hits_tokens",
)


class EngineStats:
    """Counters (reset by reset()) and live gauges (running, waiting, kv_blocks_used).

    requests_total: requests received on /v1/* (models listing excluded)
    completed: answers sent in full; cancelled: client went away before the answer ended;
    failed: fault answers served (status, drop); errors: 4xx validation answers;
    rate_limited: remote-profile 429s; preempted: preemptions (vllm:num_preemptions_total);
    prompt_tokens / completion_tokens: tokens prefilled / generated;
    prefix_queries_tokens / prefix_hits_tokens: prompt tokens looked up / found cached.
    """

    # the counters, set by reset() (one per name in _COUNTERS)
    requests_total: int
    completed: int
    cancelled: int
    failed: int
    errors: int
    rate_limited: int
    preempted: int
    prompt_tokens: int
    completion_tokens: int
    prefix_queries_tokens: int
    prefix_hits_tokens: int

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_blocks_used = 0
        self.reset()

    def reset(self) -> None:
        for name in _COUNTERS:
            setattr(self, name, 0)
        self.cost_usd = 0.0
        self.last_request_body: dict[str, Any] | None = None
        self.last_request_headers: dict[str, str] = HeaderDict()
        self.requests_by_path: dict[str, int] = {}
        self.finished_by_reason: dict[str, int] = {}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def finish(self, reason: str, e2e_s: float) -> None:
        self.finished_by_reason[reason] = self.finished_by_reason.get(reason, 0) + 1
        self.e2e.observe(e2e_s)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
        out.update(
            running=self.running,
            waiting=self.waiting,
            kv_blocks_used=self.kv_blocks_used,
            cost_usd=self.cost_usd,
            finished_by_reason=dict(self.finished_by_reason),
            ttft_count=self.ttft.count,
            ttft_sum_s=self.ttft.sum,
            e2e_count=self.e2e.count,
            e2e_sum_s=self.e2e.sum,
            requests_by_path=dict(self.requests_by_path),
            last_request_body=self.last_request_body,
            last_request_headers=dict(self.last_request_headers),
        )
        return out
