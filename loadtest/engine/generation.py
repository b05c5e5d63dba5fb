"""Token production for one request: through the batching scheduler, or direct.

Handlers call `await gen.wait(sent)` (returns the number of tokens produced so far, more
than `sent`), `await gen.wait_done()`, and always `gen.close()` (frees the slot when the
client went away). Two implementations:

- ScheduledGen: the request joins the continuous-batching scheduler (after ttft_s).
- DirectGen: no shared scheduler. Used by the remote profile (fixed latency, unlimited
  capacity: TTFT = remote_latency_s + ttft_s, then itl_s per token) and by instant
  engines (every duration 0: the whole answer is ready at once, no sleeping at all).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .requests import Job
from .scheduler import ABORTED, FINISHED, NEW, RUNNING, WAITING, Seq

if TYPE_CHECKING:
    from .server import SimEngine


class EngineGone(Exception):
    """The engine stopped while the request was in flight."""


def account_prompt(engine: SimEngine, job: Job) -> int:
    """Prefix-cache lookup + prompt counters for requests that skip the scheduler."""
    st, cache, bs = engine.stats, engine.prefix_cache, engine.config.block_size
    cached = 0
    if not engine.config.is_remote:
        pairs = zip(job.hashes, job.prompt_lens, strict=True)
        cached = bs * sum(cache.match(h, (n - 1) // bs) for h, n in pairs)
        for h in job.hashes:
            cache.insert(h)
    p = job.prompt_tokens
    st.prompt_tokens += p
    st.prefix_queries_tokens += p
    st.prefix_hits_tokens += cached
    return cached


class DirectGen:
    __slots__ = ("engine", "job", "arrival", "produced", "active", "t_first")

    def __init__(self, engine: SimEngine, job: Job, arrival: float) -> None:
        self.engine = engine
        self.job = job
        self.arrival = arrival
        self.produced = 0
        self.active = False
        self.t_first = 0.0

    async def _start(self) -> None:
        cfg = self.engine.config
        delay = cfg.ttft_s + (cfg.remote_latency_s if cfg.is_remote else 0.0)
        loop = asyncio.get_running_loop()
        self.engine.stats.running += 1  # in flight from arrival: no queue, unlimited capacity
        self.active = True
        if delay:
            await asyncio.sleep(max(0.0, self.arrival + delay / cfg.time_scale - loop.time()))
        account_prompt(self.engine, self.job)
        self.t_first = loop.time()
        self.engine.stats.ttft.observe((self.t_first - self.arrival) * cfg.time_scale)

    def _advance(self, produced: int) -> int:
        st = self.engine.stats
        st.completion_tokens += (produced - self.produced) * self.job.n_choices
        self.produced = produced
        if produced >= self.job.target:
            self._finish()
        return produced

    def _finish(self) -> None:
        eng, job = self.engine, self.job
        cfg, st = eng.config, eng.stats
        if self.active:
            st.running -= 1
            self.active = False
        if job.finish_hashes and not cfg.is_remote:
            eng.prefix_cache.insert(job.finish_hashes)
        if cfg.is_remote:
            st.cost_usd += (
                job.prompt_tokens * cfg.price_per_input_token + job.completion_tokens * cfg.price_per_output_token
            )
        now = asyncio.get_running_loop().time()
        st.finish(job.finish_reason, (now - self.arrival) * cfg.time_scale)

    async def wait(self, sent: int) -> int:
        cfg = self.engine.config
        if self.produced == 0:
            await self._start()
            return self._advance(1 if cfg.itl_s else self.job.target)
        if sent < self.produced:
            return self.produced
        due = self.t_first + sent * cfg.itl_s / cfg.time_scale
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        return self._advance(sent + 1)

    async def wait_done(self) -> None:
        cfg = self.engine.config
        if self.produced == 0:
            await self._start()
        if self.produced < self.job.target and cfg.itl_s:
            due = self.t_first + (self.job.target - 1) * cfg.itl_s / cfg.time_scale
            delay = due - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.produced < self.job.target:
            self._advance(self.job.target)

    def close(self) -> None:
        if self.active:
            self.engine.stats.running -= 1
            self.active = False


class ScheduledGen:
    __slots__ = ("engine", "seq", "arrival")

    def __init__(self, engine: SimEngine, job: Job, arrival: float) -> None:
        self.engine = engine
        self.arrival = arrival
        self.seq = Seq(
            job.prompt_lens, job.hashes, job.target, job.finish_reason, arrival, job.finish_hashes, job.n_choices
        )

    async def _submit(self) -> None:
        cfg = self.engine.config
        if cfg.ttft_s:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, self.arrival + cfg.ttft_s / cfg.time_scale - loop.time()))
        self.engine.scheduler.submit(self.seq)

    async def wait(self, sent: int) -> int:
        seq = self.seq
        if seq.state == NEW:
            await self._submit()
        while seq.generated <= sent and (seq.state == WAITING or seq.state == RUNNING):
            seq.event.clear()
            await seq.event.wait()
        if seq.state == ABORTED:
            raise EngineGone()
        return seq.generated

    async def wait_done(self) -> None:
        seq = self.seq
        if seq.state == NEW:
            await self._submit()
        while seq.state != FINISHED:
            if seq.state == ABORTED:
                raise EngineGone()
            seq.event.clear()
            await seq.event.wait()

    def close(self) -> None:
        if self.seq.state == WAITING or self.seq.state == RUNNING:
            self.engine.scheduler.abort(self.seq)
