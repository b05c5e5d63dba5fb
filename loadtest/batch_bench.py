"""Batch API benchmark (issue 17): a large batch on SIMULATED engines beside interactive traffic at
~50% of the cluster's capacity.

    python -m loadtest.batch_bench [--lines 10000] [--engines 2] [--slots 16] [--load 0.5]
        [--duration 60] [--line-tokens 16] [--reserve 1] [--restart-lines 2000] [--json out.json]

The cluster: `--engines` simulated vLLM engines (in a child process) with the swarm cluster's cost
model (loadtest/configs/four-engines.toml: prefill 20k tokens/s, a decode step of 10 ms + 0.2 ms per
running sequence), each with `max_num_seqs = --slots` and the gateway's `max_concurrency = --slots`,
so capacity is engines x slots sequences and the engines never queue. The gateway runs as
`switchyard serve` in a child process (its CPU apart from the client's), its batch store in a
temporary SQLite file.

Interactive traffic: streamed chat requests (an agent's ~700-token system prompt, a user turn, 32
tokens out), read as raw bytes (aiohttp), arriving as a Poisson process of rate load x capacity / d,
d = the mean duration of a request when load x capacity of them run back to back (measured first);
the same arrival times in both runs. TTFT = the first chunk with content, at the client.

    run A  interactive alone for --duration s
    run B  a --lines batch (--line-tokens out per line; 16 prefix groups of a ~140-token system
           prompt) created first, then the same interactive traffic for --duration s; then the batch
           runs alone to its end

Reported: interactive TTFT p50/p95/p99 in A and B (target: B's p95 within 1.2x of A's); the share of
idle capacity the batch used during B's interactive window, sampled every 100 ms as batch sequences
in flight (the gateway's in-flight gauge minus the client's own streams) / (capacity - interactive
in flight) (target >= 80%); the batch's time; from /metrics, interactive requests that waited in the
admission queue (count, total seconds) and batch lines preempted.

Restart: `--restart-lines` lines through another `switchyard serve` child process on its own SQLite
store, SIGKILLed once a third of the lines are done and started again; the output's custom_ids are
counted: lost (missing) and duplicated (more than once), target 0 and 0.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from openai import AsyncOpenAI

from gateway.config import Config, parse_config
from gateway.keys import hash_key
from gateway.logs import configure_logging
from loadtest.overhead import free_port, wait_port
from loadtest.swarm.engines import EngineHost

KEY = "sk-batch-bench"
INTERACTIVE_TOKENS = 32
MODEL = "llama"
SYSTEM = "You are a careful coding agent. Use the tools, keep answers short, cite files by path. " * 8
ENGINE = {
    "prefill_s_per_token": 0.00005,
    "decode_base_s": 0.01,
    "decode_per_seq_s": 0.0002,
    "kv_blocks": 8192,
    "prefix_cache_blocks": 8192,
    "output_tokens": 64,
}


def cluster_config(engines: int, slots: int, db: str, port: int, time_scale: float) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning", "health_check_interval_s": 2},
        "simulation": {"engine": {**ENGINE, "max_num_seqs": slots}, "time_scale": time_scale},
        "backends": [
            {"name": f"gpu-{i}", "kind": "vllm", "url": f"http://127.0.0.1:{18200 + i}/v1", "max_concurrency": slots}
            for i in range(engines)
        ],
        "models": [
            {
                "name": MODEL,
                "policy": "session-affinity",
                "deployments": [{"backend": f"gpu-{i}", "model": "m"} for i in range(engines)],
            }
        ],
        "teams": [{"name": "bench"}],
        "keys": [{"name": "bench", "team": "bench", "sha256": hash_key(KEY)}],
        "batch": {"store": f"sqlite:///{db}", "poll_s": 0.1},
    }


def to_config(raw: dict[str, Any]) -> Config:
    return parse_config(orjson.dumps(raw).decode(), fmt="yaml", env={})


def batch_lines(n: int, tokens: int, groups: int = 16) -> bytes:
    out = []
    for i in range(n):
        system = f"Summarise documents of collection {i % groups}. " * 20
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Document {i}: lorem ipsum."}]
        body = {"model": MODEL, "messages": messages, "max_tokens": tokens}
        out.append(
            orjson.dumps({"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    return b"\n".join(out) + b"\n"


def client(base: str) -> AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=2000), timeout=600)
    return AsyncOpenAI(base_url=base, api_key=KEY, max_retries=3, http_client=http)


_CONTENT = re.compile(rb'"content":"[^"]')


class Interactive:
    """Streamed chat requests read as raw bytes (aiohttp: the client must not be the bottleneck on
    a small machine); TTFT = the first chunk with content; the in-flight count for sampling."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.url = base + "/chat/completions"
        self.in_flight = 0
        self.ttfts: list[float] = []
        self.errors = 0

    async def one(self, i: int) -> float:
        body = {
            "model": MODEL,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Task {i}: fix it."}],
            "max_tokens": INTERACTIVE_TOKENS,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {KEY}", "x-switchyard-session": f"agent-{i % 24}"}
        self.in_flight += 1
        started = time.perf_counter()
        first = None
        try:
            async with self.session.post(self.url, data=orjson.dumps(body), headers=headers) as r:
                if r.status != 200:
                    self.errors += 1
                async for chunk in r.content.iter_any():
                    if first is None and _CONTENT.search(chunk):
                        first = time.perf_counter() - started
        except aiohttp.ClientError:
            self.errors += 1
        finally:
            self.in_flight -= 1
        if first is not None:
            self.ttfts.append(first)
        return time.perf_counter() - started

    async def run(self, arrivals: list[float]) -> None:
        t0 = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(i)))
        await asyncio.gather(*tasks)

    async def closed_loop(self, workers: int, seconds: float) -> float:
        """Mean duration of requests sent back to back by `workers` at once (the calibration)."""
        end = time.perf_counter() + seconds
        durations: list[float] = []

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < end:
                durations.append(await self.one(i))
                i += workers

        await asyncio.gather(*(worker(w) for w in range(workers)))
        return statistics.mean(durations)


_IN_FLIGHT = re.compile(rb"^switchyard_deployment_in_flight\{[^}]*\} ([0-9.e+]+)$", re.M)


async def in_flight(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(base + "/metrics") as r:
        text = await r.read()
    return int(sum(float(v) for v in _IN_FLIGHT.findall(text)))


async def sample(
    session: aiohttp.ClientSession, base: str, inter: Interactive, stop: asyncio.Event, out: list[tuple[int, int]]
) -> None:
    while not stop.is_set():
        mine = inter.in_flight
        total = await in_flight(session, base)
        out.append((mine, max(0, total - mine)))
        await asyncio.sleep(0.1)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def create_batch(c: AsyncOpenAI, n: int, tokens: int) -> str:
    f = await c.files.create(file=("docs.jsonl", io.BytesIO(batch_lines(n, tokens))), purpose="batch")
    b = await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    return b.id


class GatewayProcess:
    """`switchyard serve` in a child process on its own port (its CPU apart from the client's)."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.port = raw["server"]["port"]
        self.path = path
        path.write_bytes(orjson.dumps(raw))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        root = Path(__file__).resolve().parents[1]
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(self.path)]
        log = self.path.with_suffix(".log").open("ab")
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=log)
        await asyncio.to_thread(wait_port, self.port)

    def kill(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


async def main_async(a: argparse.Namespace) -> dict[str, Any]:
    configure_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    host = EngineHost(separate_process=True)
    raw = cluster_config(a.engines, a.slots, str(tmp / "batch.db"), free_port(), a.time_scale)
    if a.reserve is not None:  # [admission.classes.background].reserve_slots (default 1)
        background = {"max_wait_s": 3600, "reserve_slots": a.reserve, "preemptible": True}
        raw["admission"] = {"classes": {"interactive": {"max_wait_s": 30}, "background": background}}
    config, _ = await host.start(to_config(raw))
    raw["backends"] = [b.model_dump(mode="json", exclude_none=True) for b in config.backends]
    raw.pop("simulation")
    capacity = a.engines * a.slots
    result: dict[str, Any] = {"engines": a.engines, "slots": a.slots, "capacity": capacity, "lines": a.lines}
    result.update(line_tokens=a.line_tokens, reserve_slots=1 if a.reserve is None else a.reserve)
    gw = GatewayProcess(raw, tmp / "gw.yaml")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(600))
    try:
        await gw.start()
        c = client(gw.base + "/v1")
        probe = Interactive(session, gw.base + "/v1")
        await probe.closed_loop(2, 2.0)  # warm-up
        duration = await probe.closed_loop(max(1, round(a.load * capacity)), 8.0)
        rate = a.load * capacity / duration
        rng = random.Random(7)
        arrivals, t = [], 0.0
        while t < a.duration:
            t += rng.expovariate(rate)
            arrivals.append(t)
        result.update(request_s_at_load=round(duration, 3), arrivals_per_s=round(rate, 2), requests=len(arrivals))
        print(f"capacity {capacity} seqs; a request takes {duration:.3f}s at {a.load:.0%} -> {rate:.1f} req/s")

        for run in ("alone", "with_batch"):
            inter = Interactive(session, gw.base + "/v1")
            samples: list[tuple[int, int]] = []
            batch_id, before = None, 0
            if run == "with_batch":
                batch_id = await create_batch(c, a.lines, a.line_tokens)
                started = time.monotonic()
                while await in_flight(session, gw.base) < capacity - a.engines * result["reserve_slots"]:
                    await asyncio.sleep(0.1)  # the batch fills what it may (one slot each stays free)
                before = await _completed(c, batch_id)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(session, gw.base, inter, stop, samples))
            await inter.run(arrivals)
            stop.set()
            await sampler
            row: dict[str, Any] = {
                "ttft_p50_ms": round(pct(inter.ttfts, 0.5), 1),
                "ttft_p95_ms": round(pct(inter.ttfts, 0.95), 1),
                "ttft_p99_ms": round(pct(inter.ttfts, 0.99), 1),
                "interactive_in_flight": round(statistics.mean(s[0] for s in samples), 2),
                "errors": inter.errors,
            }
            if batch_id is not None:
                used = statistics.mean(s[1] for s in samples)
                idle = statistics.mean(capacity - s[0] for s in samples)
                row.update(batch_in_flight=round(used, 2), idle_share_used=round(used / idle, 3))
                row["lines_during_window"] = await _completed(c, batch_id) - before
                while (b := await c.batches.retrieve(batch_id)).status not in FINAL:
                    await asyncio.sleep(1.0)
                counts = b.request_counts
                assert counts is not None
                row.update(batch_status=b.status, batch_s=round(time.monotonic() - started, 1))
                row.update(completed=counts.completed, failed=counts.failed)
            row.update(await gateway_figures(session, gw.base))
            result[run] = row
            print(run, row)
        result["ttft_p95_ratio"] = round(result["with_batch"]["ttft_p95_ms"] / result["alone"]["ttft_p95_ms"], 3)
        gw.stop()
        if a.restart_lines:
            result["restart"] = await restart_check(raw, a, tmp)
            print("restart", result["restart"])
    finally:
        gw.stop()
        await session.close()
        await host.stop()
    return result


FINAL = ("completed", "failed", "expired", "cancelled")


async def gateway_figures(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """From /metrics (cumulative over the gateway's life): interactive requests that waited in the
    admission queue and for how long, and batch lines preempted."""
    async with session.get(base + "/metrics") as r:
        text = (await r.read()).decode()
    figures: dict[str, float] = {}
    for name, key in (
        ('switchyard_queue_wait_seconds_count{class="interactive"}', "interactive_queued"),
        ('switchyard_queue_wait_seconds_sum{class="interactive"}', "interactive_queue_s"),
        ('switchyard_batch_lines_finished_total{outcome="preempted",team="bench"}', "lines_preempted"),
    ):
        m = re.search(re.escape(name) + r" ([0-9.e+-]+)", text)
        figures[key] = round(float(m.group(1)), 3) if m else 0.0
    return figures


async def _completed(c: AsyncOpenAI, batch_id: str) -> int:
    counts = (await c.batches.retrieve(batch_id)).request_counts
    return counts.completed if counts is not None else 0


async def restart_check(raw: dict[str, Any], a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """A `switchyard serve` child process killed (SIGKILL) a third of the way and started again."""
    raw = {**raw, "server": {**raw["server"], "port": free_port()}}
    raw["batch"] = {**raw["batch"], "store": f"sqlite:///{tmp / 'restart.db'}", "lease_s": 5}
    gw = GatewayProcess(raw, tmp / "restart.yaml")
    try:
        await gw.start()
        c = client(gw.base + "/v1")
        batch_id = await create_batch(c, a.restart_lines, a.line_tokens)
        while (done := await _completed(c, batch_id)) < a.restart_lines // 3:
            await asyncio.sleep(0.05)
        gw.kill()
        await gw.start()
        while (b := await c.batches.retrieve(batch_id)).status not in FINAL:
            await asyncio.sleep(0.5)
        content = (await c.files.content(b.output_file_id or "")).content
    finally:
        gw.stop()
    seen = Counter(orjson.loads(x)["custom_id"] for x in content.splitlines() if x.strip())
    want = {f"doc-{i}" for i in range(a.restart_lines)}
    return {
        "lines": a.restart_lines,
        "done_at_kill": done,
        "status": b.status,
        "lost": len(want - set(seen)),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "unknown": len(set(seen) - want),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--load", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--restart-lines", type=int, default=2000)
    p.add_argument("--line-tokens", type=int, default=16, help="max_tokens of each batch line")
    p.add_argument("--reserve", type=int, default=None, help="slots per engine batch lines leave free (1)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--json", type=str, default=None)
    a = p.parse_args()
    result = asyncio.run(main_async(a))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
