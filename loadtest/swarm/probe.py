"""Read each simulated engine's counters the way an operator would: scrape its /metrics (vLLM,
SGLang, TGI, llama.cpp names), keep a time series of queue and batch sizes during the run, and take
counter deltas over the run. Profiles without /metrics (plain, remote) fall back to the simulator's
own stats at /sim/stats (the remote API's cost and the request count are only there)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from loadtest.swarm.engines import EngineRef

# per profile: (waiting, running) gauge names
_LOAD = {
    "vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running"),
    "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs"),
    "tgi": ("tgi_queue_size", "tgi_batch_current_size"),
    "llamacpp": ("llamacpp:requests_deferred", "llamacpp:requests_processing"),
}


def parse_buckets(text: str, family: str) -> dict[float, float]:
    """Cumulative histogram buckets {le: count} of one family, summed over its other labels."""
    out: dict[float, float] = {}
    prefix = family + "_bucket{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].rpartition("} ")
        for part in labels.split(","):
            if part.startswith("le="):
                le = float(part[3:].strip('"'))
                out[le] = out.get(le, 0.0) + float(value)
    return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets:
        return None
    les = sorted(buckets)
    total = buckets[les[-1]]
    if total <= 0:
        return None
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (
                (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
            )
        prev_le, prev_count = le, count
    return prev_le


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name: value summed over label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


@dataclass
class Snapshot:
    """Counters of one engine at one moment (tokens, requests, seconds)."""

    queries: float = 0.0
    hits: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    preemptions: float = 0.0
    requests: float = 0.0
    cost_usd: float = 0.0
    e2e_buckets: dict[float, float] = field(default_factory=dict)  # vllm:e2e_request_latency_seconds
    ttft_buckets: dict[float, float] = field(default_factory=dict)  # vllm:time_to_first_token_seconds

    def minus(self, other: "Snapshot") -> "Snapshot":
        out = Snapshot(
            **{k: getattr(self, k) - getattr(other, k) for k in self.__dataclass_fields__ if not k.endswith("_buckets")}
        )
        out.e2e_buckets = {le: n - other.e2e_buckets.get(le, 0.0) for le, n in self.e2e_buckets.items()}
        out.ttft_buckets = {le: n - other.ttft_buckets.get(le, 0.0) for le, n in self.ttft_buckets.items()}
        return out


@dataclass
class Sample:
    t: float  # wall seconds since the run started
    waiting: float
    running: float


@dataclass
class EngineProbe:
    ref: EngineRef
    samples: list[Sample] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def profile(self) -> str:
        return self.ref.profile

    async def scrape(self, http: aiohttp.ClientSession) -> dict[str, float] | None:
        text = await self.scrape_text(http)
        return None if text is None else parse_metrics(text)

    async def scrape_text(self, http: aiohttp.ClientSession) -> str | None:
        if self.profile not in _LOAD:
            return None
        async with http.get(f"{self.ref.base}/metrics") as r:
            return await r.text() if r.status == 200 else None

    async def sim_stats(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.ref.base}/sim/stats") as r:
            return await r.json()

    async def snapshot(self, http: aiohttp.ClientSession) -> Snapshot:
        st = await self.sim_stats(http)
        text = await self.scrape_text(http)
        m = None if text is None else parse_metrics(text)
        if text is None or m is None or self.profile != "vllm":
            # prefix-cache figures only where the engine exports vLLM's counters (a remote API's cache
            # is not observable); the rest from the simulator's stats
            return Snapshot(
                0.0, 0.0, st["ttft_sum_s"], st["ttft_count"], st["preempted"], st["requests_total"], st["cost_usd"]
            )
        queries = m.get("vllm:prefix_cache_queries_total", m.get("vllm:gpu_prefix_cache_queries_total", 0.0))
        hits = m.get("vllm:prefix_cache_hits_total", m.get("vllm:gpu_prefix_cache_hits_total", 0.0))
        return Snapshot(
            queries,
            hits,
            m.get("vllm:time_to_first_token_seconds_sum", 0.0),
            m.get("vllm:time_to_first_token_seconds_count", 0.0),
            m.get("vllm:num_preemptions_total", 0.0),
            st["requests_total"],
            st["cost_usd"],
            parse_buckets(text, "vllm:e2e_request_latency_seconds"),
            parse_buckets(text, "vllm:time_to_first_token_seconds"),
        )

    async def sample(self, http: aiohttp.ClientSession, t: float) -> None:
        m = await self.scrape(http)
        if m is not None:
            waiting, running = _LOAD[self.profile]
            self.samples.append(Sample(t, m.get(waiting, 0.0), m.get(running, 0.0)))
        else:
            st = await self.sim_stats(http)
            self.samples.append(Sample(t, st["waiting"], st["running"]))


async def sample_loop(probes: list[EngineProbe], http: aiohttp.ClientSession, t0: float, every_s: float) -> None:
    """Sample every engine's queue and batch until cancelled."""
    while True:
        t = time.perf_counter() - t0
        await asyncio.gather(*(p.sample(http, t) for p in probes), return_exceptions=True)
        await asyncio.sleep(every_s)


async def lag_loop(out: list[float], every_s: float = 0.05) -> None:
    """Measure how late the event loop wakes up (seconds past each `every_s` sleep) until cancelled.
    Engines, gateway and agents share this loop: a large lag means the run was CPU-bound and the
    engines' simulated step times were stretched."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(every_s)
        out.append(max(0.0, loop.time() - t - every_s))
