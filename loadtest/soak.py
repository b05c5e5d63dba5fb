"""Soak test: hours of streaming agent traffic through `switchyard serve`, the gateway's RSS sampled.

    python -m loadtest.soak [--minutes 30] [--concurrency 8] [--sample-s 10] [--warmup-frac 0.2]
                            [--json out.json]

Two SIMULATED engines (`python -m loadtest.engine`, streams with a small inter-token delay) and
the gateway each run in their own process, as deployed. `--concurrency` agent sessions each hold
a multi-turn conversation (the history grows every turn and restarts after `--turns`), streamed
through the openai SDK with `x-switchyard-session`. Every `--sample-s` seconds the gateway's RSS
(VmRSS from /proc) is recorded. The summary compares the mean RSS of the first and the last
sample windows after warm-up: growth must stay under 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from gateway.keys import hash_key
from loadtest.overhead import free_port, wait_port

KEY = "sk-soak"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    chunks: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


def write_config(path: Path, port: int, engine_ports: list[int]) -> None:
    backends = "".join(
        f'[[backends]]\nname = "e{i}"\nkind = "vllm"\nurl = "http://127.0.0.1:{p}/v1"\n'
        for i, p in enumerate(engine_ports)
    )
    deployments = ", ".join(f'{{ backend = "e{i}", model = "soak-upstream" }}' for i in range(len(engine_ports)))
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "info"\nhealth_check_interval_s = 2\n'
        f"{backends}"
        f'[[models]]\nname = "agent"\ndeployments = [{deployments}]\n'
        f'[[teams]]\nname = "soak"\n[[keys]]\nname = "soak"\nteam = "soak"\nsha256 = "{hash_key(KEY)}"\n'
    )


async def agent(client: AsyncOpenAI, n: int, turns: int, stop: asyncio.Event, totals: Totals) -> None:
    """One agent session: a conversation growing turn by turn, every answer streamed."""
    history: list[ChatCompletionMessageParam] = []
    turn = 0
    while not stop.is_set():
        if turn % turns == 0:
            history = [{"role": "system", "content": f"You are agent {n}. Use tools when useful. " * 8}]
        history.append({"role": "user", "content": f"Step {turn}: inspect the repository and report."})
        text: list[str] = []
        try:
            stream = await client.chat.completions.create(
                model="agent",
                messages=history,
                stream=True,
                max_tokens=48,
                extra_headers={"x-switchyard-session": f"soak-{n}-{turn // turns}"},
            )
            async for chunk in stream:
                totals.chunks += 1
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
            totals.requests += 1
        except Exception as e:  # noqa: BLE001 - a soak counts failures, it does not stop on them
            totals.errors += 1
            kind = type(e).__name__
            totals.error_kinds[kind] = totals.error_kinds.get(kind, 0) + 1
            await asyncio.sleep(0.5)
        history.append({"role": "assistant", "content": "".join(text)[:2000]})
        turn += 1


def summarize(samples: list[tuple[float, int]], warmup_frac: float) -> dict[str, float]:
    """Growth of RSS after warm-up: mean of the last tenth of the samples vs the first tenth after
    warm-up (at least one sample each)."""
    after = [rss for t, rss in samples if t >= samples[-1][0] * warmup_frac] or [s[1] for s in samples]
    k = max(1, len(after) // 10)
    first, last = sum(after[:k]) / k, sum(after[-k:]) / k
    return {
        "rss_start_mib": samples[0][1] / 2**20,
        "rss_after_warmup_mib": first / 2**20,
        "rss_end_mib": last / 2**20,
        "rss_max_mib": max(s[1] for s in samples) / 2**20,
        "growth_after_warmup_pct": 100.0 * (last - first) / first,
    }


async def soak(minutes: float, concurrency: int, sample_s: float, turns: int, warmup_frac: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        engine_ports = [free_port(), free_port()]
        port = free_port()
        write_config(tmp / "soak.toml", port, engine_ports)
        engines = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loadtest.engine",
                    "--port",
                    str(p),
                    "--seed",
                    str(i),
                    "--itl",
                    "0.01",
                    "--output-tokens",
                    "24",
                    "--output-tokens-max",
                    "48",
                    "--served-model-name",
                    "soak-upstream",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i, p in enumerate(engine_ports)
        ]
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(tmp / "soak.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for p in [*engine_ports, port]:
                await asyncio.to_thread(wait_port, p)
            client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
            totals, stop = Totals(), asyncio.Event()
            tasks = [asyncio.create_task(agent(client, n, turns, stop, totals)) for n in range(concurrency)]
            samples: list[tuple[float, int]] = []
            start = time.monotonic()
            end = start + minutes * 60
            while True:
                now = time.monotonic()
                samples.append((round(now - start, 1), rss_bytes(gw.pid)))
                if now >= end:
                    break
                await asyncio.sleep(min(sample_s, max(0.0, end - now)))
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
        finally:
            for proc in (gw, *engines):
                proc.send_signal(signal.SIGTERM)
            for proc in (gw, *engines):
                proc.wait(timeout=10)
    return {
        "minutes": minutes,
        "concurrency": concurrency,
        "cpus": os.cpu_count(),
        "requests": totals.requests,
        "errors": totals.errors,
        "error_kinds": totals.error_kinds,
        "chunks": totals.chunks,
        **summarize(samples, warmup_frac),
        "samples": [(t, round(rss / 2**20, 2)) for t, rss in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--turns", type=int, default=10, help="turns per conversation before it restarts")
    parser.add_argument("--warmup-frac", type=float, default=0.2, help="share of the run ignored as warm-up")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes, args.concurrency, args.sample_s, args.turns, args.warmup_frac))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"soak: {result['minutes']} min, {result['concurrency']} agents, {result['cpus']} cores")
    print(f"requests {result['requests']}  errors {result['errors']} {result['error_kinds']}")
    print(
        f"RSS MiB: start {result['rss_start_mib']:.1f}  after warm-up {result['rss_after_warmup_mib']:.1f}  "
        f"end {result['rss_end_mib']:.1f}  max {result['rss_max_mib']:.1f}"
    )
    print(f"growth after warm-up: {result['growth_after_warmup_pct']:+.2f}% (target < 5%)")


if __name__ == "__main__":
    main()
