"""Admission on a REAL engine (issue 13): one vLLM (CPU build, SmolLM2-135M) with a small
`--max-num-seqs`, flooded by batch workers while interactive agents talk to it through the gateway;
the interactive time to first token (TTFT) p50/p95 in each configuration of the gateway:

  none      no gateway queue: admission off, no max_concurrency (today's behaviour; vLLM queues
            everything, first come first served)
  tight     the admission queue with priority classes, backends[].max_concurrency = max-num-seqs:
            the engine never queues, interactive requests take the next free sequence
  queue     the admission queue with priority classes, max_concurrency = max-num-seqs + --headroom:
            a few requests wait inside vLLM too (keeps its batch full), in arrival order
  priority  `queue` plus the class passed to vLLM as `priority` (backends[].priority_field = "vllm"):
            vLLM's own waiting queue is reordered as well

    python -m loadtest.admission_real [--modes unloaded,none,tight,queue,priority] [--seqs 4]
        [--headroom 4] [--batch 12] [--agents 4] [--duration 60] [--reps 1] [--port P] [--json out.json]

vLLM runs once, with `--scheduling-policy priority --max-num-seqs N`, for every mode: without the
field every request has vLLM's default priority 0, and equal priorities are served in arrival order.
`unloaded`: the agents alone (no batch), the reference TTFT. Modes run in the order given, each
`--reps` times interleaved. `--port`: a vLLM already running with those arguments (iterating).
Batch workers send `x-switchyard-priority: batch` and a session each; agents send their own session
and no class (interactive, the default). Every request sets `ignore_eos`, so lengths are fixed.
Install the engines first: scripts/install-engines.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.config import Config, parse_config
from gateway.keys import hash_key
from gateway.logs import configure_logging
from gateway.server import start_gateway
from loadtest.real_engines import MODEL, EnginesMissing, RealEngine, attach, engine_paths, start_vllm

KEY = "sk-admission-real"
MODES = ("unloaded", "none", "tight", "queue", "priority")
WORDS = "river stone cloud lamp orbit garden signal copper meadow thunder paper violet engine harbor".split()


def gateway_config(engine: RealEngine, mode: str, seqs: int, headroom: int) -> Config:
    backend: dict[str, Any] = {"name": "vllm", "kind": "vllm", "url": engine.url}
    if mode in ("tight", "queue", "priority"):
        backend["max_concurrency"] = seqs + (0 if mode == "tight" else headroom)
    if mode == "priority":
        backend["priority_field"] = "vllm"
    raw = {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 0.5},
        "backends": [backend],
        "models": [{"name": MODEL, "policy": "least-active", "deployments": [{"backend": "vllm", "model": MODEL}]}],
        "teams": [{"name": "agents"}],
        "keys": [{"name": "agents", "team": "agents", "sha256": hash_key(KEY), "models": ["*"]}],
        "load_signals": {"interval_s": 0.2, "stale_after_s": 2.0},
        "admission": {"enabled": mode not in ("none", "unloaded")},
    }
    return parse_config(orjson.dumps(raw).decode(), fmt="yaml", env={})  # JSON is YAML


@dataclass
class Figures:
    ttft: list[float] = field(default_factory=list)  # interactive, seconds
    turn: list[float] = field(default_factory=list)  # interactive, whole answer
    queued: dict[str, list[float]] = field(default_factory=dict)  # class -> gateway queue wait (s)
    batch_done: int = 0
    batch_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    engine_waiting: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def call(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    figures: Figures,
    cls: str,
) -> tuple[float | None, float, int]:
    """One streamed chat completion: (TTFT, total seconds, completion tokens); raises on errors."""
    t0 = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    async with http.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"http_{r.status_code}")
        queued = r.headers.get("x-switchyard-queue-ms")
        figures.queued.setdefault(cls, []).append(float(queued) / 1000 if queued else 0.0)
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if ttft is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens") or 0
    return ttft, time.perf_counter() - t0, tokens


def body_of(text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def batch_worker(http: httpx.AsyncClient, url: str, i: int, args: argparse.Namespace, figures: Figures) -> None:
    rng = random.Random(f"batch/{i}")
    headers = {"x-switchyard-priority": "batch", "x-switchyard-session": f"batch-{i}"}
    while True:
        try:
            _, _, tokens = await call(
                http, url, body_of(prompt(rng, args.batch_words), args.batch_tokens), headers, figures, "batch"
            )
            figures.batch_done += 1
            figures.batch_tokens += tokens
        except (RuntimeError, httpx.HTTPError) as e:
            figures.error(f"batch {e if isinstance(e, RuntimeError) else type(e).__name__}")
            await asyncio.sleep(0.5)


async def agent(
    http: httpx.AsyncClient, url: str, i: int, args: argparse.Namespace, figures: Figures, until: float
) -> None:
    rng = random.Random(f"agent/{i}")
    headers = {"x-switchyard-session": f"agent-{i}"}
    await asyncio.sleep(rng.uniform(0, 1.0))
    while time.perf_counter() < until:
        try:
            ttft, total, _ = await call(
                http, url, body_of(prompt(rng, args.agent_words), args.agent_tokens), headers, figures, "interactive"
            )
            if ttft is not None:
                figures.ttft.append(ttft)
                figures.turn.append(total)
        except (RuntimeError, httpx.HTTPError) as e:
            figures.error(f"interactive {e if isinstance(e, RuntimeError) else type(e).__name__}")
        await asyncio.sleep(rng.uniform(*args.think))


async def engine_quiet(engine: RealEngine, timeout_s: float = 60.0) -> None:
    """Wait until vLLM has nothing running or waiting (the previous mode's cancelled requests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = await engine.metrics("vllm:num_requests_running", "vllm:num_requests_waiting")
        if not any(m.values()):
            return
        await asyncio.sleep(0.25)


async def sample_waiting(engine: RealEngine, figures: Figures) -> None:
    while True:
        with contextlib.suppress(Exception):
            m = await engine.metrics("vllm:num_requests_waiting")
            figures.engine_waiting.append(m.get("vllm:num_requests_waiting", 0.0))
        await asyncio.sleep(0.5)


async def run_mode(engine: RealEngine, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    await engine_quiet(engine)
    gw = await start_gateway(gateway_config(engine, mode, args.seqs, args.headroom), host="127.0.0.1", port=0)
    url = gw.url.rstrip("/") + "/chat/completions"
    figures = Figures()
    limits = httpx.Limits(max_connections=args.batch + args.agents + 8, max_keepalive_connections=64)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {KEY}"}, timeout=httpx.Timeout(600.0), limits=limits
        ) as http:
            tasks.append(asyncio.create_task(sample_waiting(engine, figures)))
            if mode != "unloaded":
                tasks += [asyncio.create_task(batch_worker(http, url, i, args, figures)) for i in range(args.batch)]
                await asyncio.sleep(args.warmup)  # the flood saturates the engine first
            started = time.perf_counter()
            batch_before = (figures.batch_done, figures.batch_tokens)
            waiting_from = len(figures.engine_waiting)
            until = started + args.duration
            await asyncio.gather(*(agent(http, url, i, args, figures, until) for i in range(args.agents)))
            elapsed = time.perf_counter() - started
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        await gw.stop()
    q = {c: statistics.fmean(v) for c, v in figures.queued.items() if v}
    waiting = figures.engine_waiting[waiting_from:]
    return {
        "mode": mode,
        "interactive_turns": len(figures.ttft),
        "ttft_p50_s": pct(figures.ttft, 50),
        "ttft_p95_s": pct(figures.ttft, 95),
        "ttft_max_s": max(figures.ttft, default=None),
        "turn_p50_s": pct(figures.turn, 50),
        "batch_requests": figures.batch_done - batch_before[0],
        "batch_tok_per_s": (figures.batch_tokens - batch_before[1]) / elapsed,
        "gateway_queue_mean_s": q,
        "engine_waiting_mean": statistics.fmean(waiting) if waiting else None,
        "errors": figures.errors,
        "seconds": round(elapsed, 1),
        "ttft_s": [round(t, 4) for t in figures.ttft],
    }


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]  # nearest rank


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(runs: list[dict[str, Any]]) -> str:
    head = f"{'mode':10}{'turns':>6}{'TTFT p50':>9}{'TTFT p95':>9}{'max':>7}{'turn p50':>9}{'batch req':>10}{'batch tok/s':>12}{'q int':>7}{'q bat':>7}{'vLLM wait':>10}  errors"
    lines = [head]
    for r in runs:
        q = r["gateway_queue_mean_s"]
        lines.append(
            f"{r['mode']:10}{r['interactive_turns']:>6}{_f(r['ttft_p50_s']):>9}{_f(r['ttft_p95_s']):>9}{_f(r['ttft_max_s'], '.1f'):>7}"
            f"{_f(r['turn_p50_s']):>9}{r['batch_requests']:>10}{r['batch_tok_per_s']:>12.1f}"
            f"{_f(q.get('interactive')):>7}{_f(q.get('batch')):>7}{_f(r['engine_waiting_mean'], '.1f'):>10}  "
            f"{sum(r['errors'].values()) or 0}"
        )
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}; expected {', '.join(MODES)}")
    vllm_args = ("--scheduling-policy", "priority", "--max-num-seqs", str(args.seqs))
    if args.port:
        engine = attach("vllm", args.port)
    else:
        engine = start_vllm(engine_paths(), *vllm_args)
        print(f"vLLM starting on :{engine.port} (log {engine.log_path})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(engine.wait_ready)
        print(f"vLLM ready after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        for rep in range(args.reps):
            for mode in modes:
                r = await run_mode(engine, mode, args)
                r["rep"] = rep
                runs.append(r)
                print(table([r]).splitlines()[1], file=sys.stderr, flush=True)
    finally:
        engine.stop()
    return {
        "command": "python -m loadtest.admission_real " + " ".join(sys.argv[1:]),
        "vllm_args": list(vllm_args),
        "params": {k: v for k, v in vars(args).items() if k not in ("json",)},
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.admission_real",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--modes", default="unloaded,none,tight,queue,priority")
    p.add_argument("--seqs", type=int, default=4, help="vLLM --max-num-seqs")
    p.add_argument("--headroom", type=int, default=4, help="queue/priority: max_concurrency = seqs + headroom")
    p.add_argument("--batch", type=int, default=12, help="batch workers, each one request after another")
    p.add_argument("--batch-words", type=int, default=120, help="words of a batch prompt")
    p.add_argument("--batch-tokens", type=int, default=32, help="max_tokens of a batch request")
    p.add_argument("--agents", type=int, default=4, help="interactive agents")
    p.add_argument("--agent-words", type=int, default=30)
    p.add_argument("--agent-tokens", type=int, default=8)
    p.add_argument("--think", type=float, nargs=2, default=(0.3, 1.0), help="agents' pause between turns (s)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of batch flood before the agents start")
    p.add_argument("--duration", type=float, default=60.0, help="seconds the agents run per mode")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--port", type=int, help="a vLLM already running (with --scheduling-policy priority)")
    p.add_argument("--json", help="write the runs here")
    args = p.parse_args(argv)
    configure_logging("error", "console")
    try:
        result = asyncio.run(bench(args))
    except (ValueError, EnginesMissing, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result["runs"]))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
