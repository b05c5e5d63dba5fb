"""Continuous-batching scheduler with KV-cache blocks, prefix caching and preemption.

One asyncio task per engine (started on the first request, stopped by stop()) runs steps:

1. admit waiting sequences FCFS while running < max_num_seqs and the free KV blocks cover
   the sequence (its prompt + generated tokens, + 1 spare block; with preemption off, its
   prompt + whole answer);
2. make room for one more token in every running sequence (a new block every block_size
   tokens); when no block is free, preempt the youngest running sequence: free its blocks
   and put it back at the head of the queue (it re-prefills when re-admitted);
3. sleep the step cost, in simulated seconds divided by time_scale:
       prefill_s_per_token * (uncached tokens of sequences admitted this step)
       + decode_base_s + decode_per_seq_s * batch_size + itl_s
4. every sequence of the batch emits one token (an admitted one emits its first).
"""

from __future__ import annotations

import asyncio
from collections import deque

from .config import EngineConfig
from .prefix_cache import PrefixCache
from .stats import EngineStats

NEW, WAITING, RUNNING, FINISHED, ABORTED = range(5)
LAG_RESET_S = 0.05  # wall seconds behind schedule after which the step clock restarts


class Seq:
    """One request as the scheduler sees it."""

    __slots__ = (
        "prompt_tokens",
        "prompt_lens",
        "hashes",
        "finish_hashes",
        "target",
        "generated",
        "blocks",
        "state",
        "event",
        "arrival",
        "first_token_at",
        "admitted",
        "cached_tokens",
        "finish_reason",
        "width",
    )

    def __init__(
        self,
        prompt_lens: list[int],
        hashes: list[list[int]],
        target: int,
        finish_reason: str,
        arrival: float,
        finish_hashes: list[int] | None = None,
        width: int = 1,
    ) -> None:
        self.prompt_lens = prompt_lens
        self.prompt_tokens = sum(prompt_lens)
        self.hashes = hashes
        self.finish_hashes = finish_hashes
        self.target = target
        self.finish_reason = finish_reason
        self.generated = 0
        self.blocks = 0
        self.state = NEW
        self.event = asyncio.Event()
        self.arrival = arrival
        self.first_token_at: float | None = None
        self.admitted = False
        self.cached_tokens = 0
        self.width = width  # choices generated in lockstep (n); each step yields `width` tokens


def blocks_for(tokens: int, block_size: int) -> int:
    return max(1, -(-tokens // block_size))


class Scheduler:
    def __init__(self, config: EngineConfig, stats: EngineStats, cache: PrefixCache) -> None:
        self.cfg = config
        self.stats = stats
        self.cache = cache
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.used_blocks = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopped = False

    # ------------------------------------------------------------------ public
    def fits(self, prompt_tokens: int, target: int) -> bool:
        """Whether a request can ever be scheduled alone in the KV cache."""
        need = blocks_for(prompt_tokens + target, self.cfg.block_size)
        return need + (1 if self.cfg.preemption else 0) <= self.cfg.kv_blocks

    def submit(self, seq: Seq) -> None:
        if self._stopped:
            raise RuntimeError("engine stopped")
        seq.state = WAITING
        self.waiting.append(seq)
        self._sync()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def abort(self, seq: Seq) -> None:
        """Remove a sequence at once (client gone): frees its KV blocks."""
        if seq.state == WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        elif seq.state == RUNNING:
            self.running.remove(seq)
            self._free(seq)
        seq.state = ABORTED
        seq.event.set()
        self._sync()
        self._wake.set()

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for seq in list(self.waiting) + self.running:
            seq.state = ABORTED
            seq.event.set()
        self.waiting.clear()
        self.running.clear()
        self.used_blocks = 0
        self._sync()

    # ----------------------------------------------------------------- internal
    def _sync(self) -> None:
        st = self.stats
        st.running = len(self.running)
        st.waiting = len(self.waiting)
        st.kv_blocks_used = self.used_blocks

    def _free(self, seq: Seq) -> None:
        self.used_blocks -= seq.blocks
        seq.blocks = 0

    def _admit(self) -> int:
        """Admit waiting sequences; returns the prompt tokens to prefill this step."""
        cfg, bs = self.cfg, self.cfg.block_size
        prefill = 0
        while self.waiting and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            tokens = seq.prompt_tokens + seq.generated
            if cfg.preemption:
                alloc = blocks_for(tokens, bs)
                need = alloc + 1
            else:
                alloc = need = blocks_for(seq.prompt_tokens + seq.target, bs)
            if cfg.kv_blocks - self.used_blocks < need:
                break
            self.waiting.popleft()
            cached = bs * sum(
                self.cache.match(h, (plen - 1) // bs) for h, plen in zip(seq.hashes, seq.prompt_lens, strict=True)
            )
            if not seq.admitted:
                seq.admitted = True
                seq.cached_tokens = cached
                st = self.stats
                st.prompt_tokens += seq.prompt_tokens
                st.prefix_queries_tokens += seq.prompt_tokens
                st.prefix_hits_tokens += cached
                for h in seq.hashes:
                    self.cache.insert(h)
            prefill += tokens - cached
            seq.blocks = alloc
            self.used_blocks += alloc
            seq.state = RUNNING
            self.running.append(seq)
        return prefill

    def _preempt(self, seq: Seq) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.state = WAITING
        self.waiting.appendleft(seq)
        self.stats.preempted += 1

    def _reserve_next_token(self) -> None:
        """Give every running sequence room for one more token, preempting if needed."""
        bs, total = self.cfg.block_size, self.cfg.kv_blocks
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            need = blocks_for(seq.prompt_tokens + seq.generated + 1, bs)
            while seq.blocks < need and seq.state == RUNNING:
                if self.used_blocks < total:
                    seq.blocks += 1
                    self.used_blocks += 1
                else:
                    self._preempt(self.running[-1])  # youngest; may be seq itself
            if seq.state == RUNNING:
                i += 1

    def _finish(self, seq: Seq, now: float) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.state = FINISHED
        if seq.finish_hashes:
            self.cache.insert(seq.finish_hashes)
        self.stats.finish(seq.finish_reason, (now - seq.arrival) * self.cfg.time_scale)

    def _step_cost(self, prefill_tokens: int, batch: int) -> float:
        cfg = self.cfg
        return prefill_tokens * cfg.prefill_s_per_token + cfg.decode_base_s + cfg.decode_per_seq_s * batch + cfg.itl_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ts = self.cfg.time_scale
        stats = self.stats
        deadline = loop.time()
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            prefill = self._admit()
            self._reserve_next_token()
            batch = list(self.running)
            self._sync()
            if not batch:  # nothing fits yet: wait for an abort or a finish
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            if now - deadline > LAG_RESET_S:
                deadline = now
            deadline += self._step_cost(prefill, len(batch)) / ts
            delay = deadline - now
            await asyncio.sleep(delay if delay > 0 else 0)
            now = loop.time()
            for seq in batch:
                if seq.state != RUNNING:
                    continue
                seq.generated += 1
                stats.completion_tokens += seq.width
                if seq.first_token_at is None:
                    seq.first_token_at = now
                    stats.ttft.observe((now - seq.arrival) * ts)
                if seq.generated >= seq.target:
                    self._finish(seq, now)
                seq.event.set()
            self._sync()
