"""Fit the simulator's cost model to a real vLLM engine, measured through its own API:

- prefill: time to first token of single requests with unique prompts of a few sizes, a straight
  line TTFT = overhead + prompt_tokens x prefill_s_per_token;
  (every engine is measured at the same time, as the swarm will load them: on a shared 2-core
  machine an engine alone runs faster than one of two busy ones)
- decode: the median gap between tokens with B streams running at once (B = 1, 2, 4 ...), a straight
  line step = decode_base_s + B x decode_per_seq_s;
- block size and KV-cache size from vllm:cache_config_info; max_num_seqs as the engine was started.

The simulator counts one token per 4 bytes of its own rendered prompt, SmolLM2's tokenizer about
one per 3.5 characters of the chat template's: `real_per_sim_token` (measured on the swarm's own
prompts with vLLM's /tokenize) converts per-token costs and the block size into simulator tokens, so
the same text costs the same time and spans the same share of a block on both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import asdict, dataclass

import aiohttp
from openai import AsyncOpenAI

from loadtest.calibrate import agents
from loadtest.engine import EngineConfig
from loadtest.engine.tokenize import count_tokens, render_chat

PREFILL_WORDS = (40, 250, 500)  # ~1.6 real tokens per word: ~70, ~400, ~800 tokens
BATCHES = (1, 2, 4, 8)
DECODE_TOKENS = 40


@dataclass
class Fit:
    prefill_s_per_token: float  # per real token
    ttft_overhead_s: float
    decode_base_s: float
    decode_per_seq_s: float
    decode_step_s: dict[int, float]  # batch size -> measured median step
    prefill_points: list[tuple[int, float]]  # (prompt tokens, TTFT)
    block_size: int  # real tokens
    kv_tokens: int
    max_num_seqs: int
    real_per_sim_token: float
    # one engine measured alone (the other idle): what the host's contention adds when both work
    solo_prefill_s_per_token: float = 0.0
    solo_decode_step_s: float = 0.0

    def engine_config(self, model: str, seed: int = 0) -> EngineConfig:
        """The simulator's config: the fitted costs in simulator tokens."""
        r = self.real_per_sim_token
        step1 = self.decode_base_s + self.decode_per_seq_s
        block = max(1, round(self.block_size / r))
        blocks = max(1, self.kv_tokens // self.block_size)
        return EngineConfig(
            profile="vllm",
            seed=seed,
            served_model_names=[model],
            prefill_s_per_token=self.prefill_s_per_token * r,
            ttft_s=max(0.0, self.ttft_overhead_s - step1),
            decode_base_s=self.decode_base_s,
            decode_per_seq_s=self.decode_per_seq_s,
            max_num_seqs=self.max_num_seqs,
            block_size=block,
            kv_blocks=blocks,
            prefix_cache_blocks=blocks,
            max_model_len=int(2048 / r),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope); through the origin when the free fit's intercept is negative
    (CPU prefill grows a little faster than linearly: a negative fixed cost would be nonsense)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    if my - slope * mx >= 0:
        return my - slope * mx, slope
    return 0.0, sum(x * y for x, y in points) / sum(x * x for x in xs)


async def _stream(client: AsyncOpenAI, model: str, text: str, tokens: int) -> tuple[float, list[float], int]:
    """(TTFT, arrival times of content chunks, prompt tokens) of one streamed request."""
    t0 = time.monotonic()
    times: list[float] = []
    prompt = 0
    s = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic())
        if chunk.usage:
            prompt = chunk.usage.prompt_tokens
    return times[0] - t0, times, prompt


def _unique(words: int) -> str:
    return uuid.uuid4().hex + " " + " ".join(f"wagon {i % 40} left yard {i % 7}" for i in range(words // 4))


async def measure_prefill(client: AsyncOpenAI, model: str, repeats: int = 2) -> list[tuple[int, float]]:
    points: list[tuple[int, float]] = []
    for words in PREFILL_WORDS:
        best: tuple[int, float] | None = None
        for _ in range(repeats):  # the fastest of a few: other work on a shared machine only adds time
            ttft, _, prompt = await _stream(client, model, _unique(words), 1)
            best = (prompt, ttft) if best is None or ttft < best[1] else best
        assert best is not None
        points.append(best)
    return points


async def measure_decode(client: AsyncOpenAI, model: str, batches: tuple[int, ...]) -> dict[int, float]:
    steps = {}
    for b in batches:
        runs = await asyncio.gather(*(_stream(client, model, _unique(8), DECODE_TOKENS) for _ in range(b)))
        start = max(times[2] for _, times, _ in runs)  # every stream running
        gaps = [y - x for _, times, _ in runs for x, y in zip(times, times[1:], strict=False) if x >= start]
        steps[b] = statistics.median(gaps)
    return steps


async def cache_config(base: str) -> tuple[int, int]:
    """(block size, KV-cache tokens) from vllm:cache_config_info's labels."""
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    line_ = next(x for x in text.splitlines() if x.startswith("vllm:cache_config_info{"))
    labels = dict(p.split("=", 1) for p in line_[line_.index("{") + 1 : line_.rindex("}")].split(","))
    return int(labels["block_size"].strip('"')), int(labels["kv_cache_size_tokens"].strip('"'))


async def real_per_sim_token(base: str, model: str, w: agents.Workload) -> float:
    """Real tokens per simulator token over the swarm's prompts (vLLM's /tokenize vs the simulator's count)."""
    real = sim = 0
    async with aiohttp.ClientSession() as s:
        for a in range(min(3, w.agents)):
            messages = [{"role": "system", "content": agents.system_prompt("fit")}]
            messages.append({"role": "user", "content": agents.task(a)})
            for t in range(1, w.turns):
                messages += [{"role": "assistant", "content": "ok " * w.answer_tokens}]
                messages += [{"role": "user", "content": agents.follow_up(a, t)}]
            async with s.post(base + "/tokenize", json={"model": model, "messages": messages}) as r:
                real += (await r.json())["count"]
            sim += count_tokens(render_chat(messages))
    return real / sim


async def _measure(
    base: str, model: str, batches: tuple[int, ...], repeats: int = 2
) -> tuple[list[tuple[int, float]], dict[int, float]]:
    client = AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    try:
        await _stream(client, model, "warm up", 4)
        prefill = await measure_prefill(client, model, repeats)
        steps = await measure_decode(client, model, batches)
    finally:
        await client.close()
    return prefill, steps


async def fit(bases: list[str], model: str, max_num_seqs: int, w: agents.Workload) -> Fit:
    """Measure every engine at the same time (the swarm keeps them all busy on shared cores, so their
    costs are measured under that contention) and fit one cost model to all the points."""
    solo_prefill, solo_steps = await _measure(bases[0], model, (1,), repeats=1)
    batches = tuple(b for b in BATCHES if b <= max_num_seqs)
    measured = await asyncio.gather(*(_measure(b, model, batches) for b in bases))
    prefill = sorted(p for points, _ in measured for p in points)
    steps = {b: statistics.median(m[1][b] for m in measured) for b in measured[0][1]}
    overhead, per_token = line([(float(p), t) for p, t in prefill])
    base_s, per_seq = line([(float(b), s) for b, s in steps.items()])
    block, kv = await cache_config(bases[0])
    ratio = await real_per_sim_token(bases[0], model, w)
    solo = line([(float(p), t) for p, t in solo_prefill])[1]
    return Fit(
        per_token,
        overhead,
        max(0.0, base_s),
        max(0.0, per_seq),
        steps,
        prefill,
        block,
        kv,
        max_num_seqs,
        ratio,
        solo,
        solo_steps[1],
    )
