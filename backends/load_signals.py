"""Engine load signals: each local engine's /metrics turned into one Load per deployment.

A scraper (on the Gateway) reads every local engine's Prometheus text on an interval, and once more
on demand when a policy finds a reading stale. Names per engine kind:

    vllm      vllm:num_requests_waiting, vllm:num_requests_running,
              vllm:kv_cache_usage_perc (older vLLM: vllm:gpu_cache_usage_perc)
    sglang    sglang:num_queue_reqs, sglang:num_running_reqs, sglang:token_usage
    tgi       tgi_queue_size, tgi_batch_current_size (no KV figure)
    llamacpp  llamacpp:requests_deferred, llamacpp:requests_processing, llamacpp:kv_cache_usage_ratio

Series of one name are summed (several engines or models behind one URL); KV use takes the maximum.
Engines without metrics (Candle-style servers, remote APIs, a /metrics answering 404 or without
those names) use the gateway's own in-flight count. A reading older than `stale_after_s` (or an
engine that could not be scraped) counts as busy: `Load.stale`, `requests` infinite.
Between scrapes, requests the gateway sent since the reading are added (`requests`), and while the
engine was queueing, to `waiting` too, so a burst is seen before the next scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp

from backends.base import UpstreamTooLarge, read_bounded

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.load_config import LoadSignalsConfig


@dataclass(frozen=True, slots=True)
class Load:
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float | None = None  # 0..1; None = the engine does not say
    stale: bool = False
    source: str = "in_flight"  # "metrics" | "in_flight"

    @property
    def requests(self) -> float:
        return float("inf") if self.stale else self.waiting + self.running


class Names(NamedTuple):
    waiting: tuple[str, ...]
    running: tuple[str, ...]
    kv: tuple[str, ...]


FLAVOURS: dict[str, Names] = {
    "vllm": Names(
        ("vllm:num_requests_waiting",),
        ("vllm:num_requests_running",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": Names(("sglang:num_queue_reqs",), ("sglang:num_running_reqs",), ("sglang:token_usage",)),
    "tgi": Names(("tgi_queue_size",), ("tgi_batch_current_size",), ()),
    "llamacpp": Names(
        ("llamacpp:requests_deferred",), ("llamacpp:requests_processing",), ("llamacpp:kv_cache_usage_ratio",)
    ),
}


def parse_samples(text: str, wanted: set[str]) -> dict[str, list[float]]:
    """Values of the wanted metric names in Prometheus text format (labels ignored)."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        try:
            out.setdefault(name, []).append(float(rest.split()[0]))
        except (IndexError, ValueError):
            continue
    return out


def load_from_text(text: str, names: Names) -> Load | None:
    """The Load in one scrape, or None when the text has none of the flavour's queue names."""
    samples = parse_samples(text, {*names.waiting, *names.running, *names.kv})

    def first(group: tuple[str, ...]) -> list[float] | None:
        return next((samples[n] for n in group if n in samples), None)

    waiting, running, kv = first(names.waiting), first(names.running), first(names.kv)
    if waiting is None and running is None:
        return None
    return Load(sum(waiting or ()), sum(running or ()), max(kv) if kv else None, False, "metrics")


def metrics_url_of(backend_url: str) -> str:
    base = backend_url.rstrip("/")
    return (base[:-3] if base.endswith("/v1") else base) + "/metrics"


class LoadSignal:
    """One engine's latest reading. `current(in_flight)` never waits: a stale reading asks the
    scraper for a fresh one in the background and counts as busy meanwhile."""

    def __init__(
        self,
        names: Names | None,
        url: str,
        stale_after_s: float,
        refresh: Callable[["LoadSignal"], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names, self.url = names, url
        self.stale_after_s = stale_after_s
        self._refresh = refresh
        self._clock = clock
        self.reading: Load | None = None
        self.read_at = float("-inf")
        self.in_flight_at_read = 0
        self.attempted_at = float("-inf")  # last scrape started (on-demand scrapes are spaced out)

    @property
    def has_metrics(self) -> bool:
        return self.names is not None

    def update(self, load: Load | None, in_flight: int) -> None:
        """A scrape's result: a Load, or None = the engine has no usable metrics (in-flight from now)."""
        if load is None:
            self.names = None
        self.reading, self.read_at, self.in_flight_at_read = load, self._clock(), in_flight

    def current(self, in_flight: int, refresh: bool = True) -> Load:
        if self.names is None:
            return Load(0.0, float(in_flight))
        r = self.reading
        if r is None or self._clock() - self.read_at > self.stale_after_s:
            if refresh and self._refresh is not None:
                self._refresh(self)
            return Load(r.waiting, r.running, r.kv_usage, True, "metrics") if r else Load(stale=True, source="metrics")
        delta = in_flight - self.in_flight_at_read  # requests the gateway sent (or finished) since
        if r.waiting > 0:  # the engine was queueing: what we sent since queues too
            waiting, running = max(0.0, r.waiting + delta), r.running
        else:
            waiting, running = 0.0, max(0.0, r.running + delta)
        running = max(running, in_flight - waiting)
        return Load(waiting, running, r.kv_usage, False, "metrics")


class LoadScraper:
    """Scrapes every local engine on an interval (and on demand), updates its LoadSignal and calls
    `on_update(backend, load)` (the Prometheus gauges)."""

    def __init__(
        self,
        backends: list["Backend"],
        config: "LoadSignalsConfig",
        on_update: Callable[["Backend", Load], None] | None = None,
        log: Any = None,
    ) -> None:
        self.cfg = config
        self._on_update = on_update
        self._log = log
        self._backends = list(backends)
        self._signals: dict[LoadSignal, "Backend"] = {}
        self._pending: set[LoadSignal] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        for b in backends:
            flavour: str = b.config.load_metrics
            if flavour == "auto":
                flavour = b.kind if b.local and b.kind in FLAVOURS else "none"
            names = FLAVOURS.get(flavour) if config.enabled else None
            url = b.config.metrics_url or metrics_url_of(b.config.url)
            signal = LoadSignal(names, url, config.stale_after_s, self._request_refresh)
            b.load_signal = signal
            if names is not None:
                self._signals[signal] = b

    async def start(self) -> None:
        if not self._backends:
            return
        if self._signals:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
        await self.scrape_all()
        self._loop_task = asyncio.create_task(self._loop(), name="switchyard-load-scraper")

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._loop_task, *self._tasks] if t is not None), return_exceptions=True)
        self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            await self.scrape_all()

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(s) for s in list(self._signals) if s.has_metrics))
        for b in self._backends:  # engines without metrics: their gauges follow the in-flight count
            if b.load_signal is not None and not b.load_signal.has_metrics and self._on_update is not None:
                self._on_update(b, b.load_signal.current(b.active, refresh=False))

    async def scrape(self, signal: LoadSignal) -> None:
        backend = self._signals[signal]
        if self._session is None or signal.names is None:
            return
        signal.attempted_at = time.monotonic()
        try:
            async with self._session.get(signal.url) as resp:
                raw = await read_bounded(resp.content, resp.content_length, backend.max_body_bytes)
                text = raw.decode("utf-8", "replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, UpstreamTooLarge):
            status, text = 0, ""
        if status == 0 or (status >= 400 and status != 404):  # no new reading: it goes stale, stale is busy
            if self._on_update is not None:
                self._on_update(backend, signal.current(backend.active, refresh=False))
            return
        load = None if status == 404 else load_from_text(text, signal.names)
        if load is None and self._log is not None:
            self._log.warning(
                "load_metrics_missing", backend=backend.name, url=signal.url, using="the gateway's in-flight count"
            )
        signal.update(load, backend.active)
        if self._on_update is not None:
            self._on_update(backend, signal.current(backend.active, refresh=False))

    def _request_refresh(self, signal: LoadSignal) -> None:
        if signal in self._pending or signal not in self._signals or self._session is None:
            return
        if time.monotonic() - signal.attempted_at < self.cfg.interval_s / 2:
            return  # a scrape just failed or is recent: do not hammer an engine that is down
        self._pending.add(signal)
        task = asyncio.get_running_loop().create_task(self.scrape(signal))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._scraped(t, signal))

    def _scraped(self, task: asyncio.Task[None], signal: LoadSignal) -> None:
        self._tasks.discard(task)
        self._pending.discard(signal)
