"""Overhead of rate limits + budgets on the hot path: no limits vs in memory vs Redis, one run.

    python -m loadtest.limits_bench [--duration 3] [--rounds 3] [--connections 50] [--redis URL] [--quota]

Three `switchyard serve` processes in front of the same fast upstream (nginx with a canned answer,
as loadtest/overhead.py): one without limits, one with a key rule (RPM, TPM, concurrency) and a team
budget in memory (SQLite ledger), one with the same rules in Redis. Limits are set high so nothing
is refused: what is measured is the cost of checking. Reports p50 at 1 connection and requests/s at
N connections for each (median of the interleaved rounds), the added p50 against no limits, Redis
throughput as a share of memory, and one bare redis-py PING round trip (the floor for Redis mode).
`--quota` adds two variants with only a per-deployment quota (`backends[].limits`, no [limits]
rules): in memory and in Redis (the deployment quota's own store call in dispatch).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from loadtest.overhead import KEY, REQUEST, free_port, start_upstream, wait_port, write_config, wrk

LIMITS = """
[limits]
rules = [{ scope = "key", name = "*", requests_per_minute = 100000000, tokens_per_minute = 1000000000000, concurrent = 100000 }]
[budgets]
sqlite_path = "{db}"
rules = [{ scope = "team", name = "bench", period = "monthly", soft_usd = 1000000000, hard_usd = 2000000000 }]
[prices."bench"]
input_per_mtok = 0.1
output_per_mtok = 0.2
"""
# a per-deployment quota set high (nothing refused): the cost of taking it in dispatch
QUOTA = "limits = { requests_per_minute = 100000000, tokens_per_minute = 1000000000000 }\n"


def redis_round_trip_ms(url: str, n: int = 2000) -> float:
    """p50 of one PING through redis-py (the same client and pool as the gateway): the floor of what
    one Redis round trip adds on this machine."""
    import asyncio
    import time

    from gateway.config import RedisConfig
    from gateway.redis_client import make_redis

    async def run() -> float:
        client = make_redis(RedisConfig(url=url))
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await client.ping()
            samples.append(time.perf_counter() - t)
        await client.aclose()
        return sorted(samples)[n // 2] * 1000

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--settle-delay-ms",
        type=float,
        default=0.0,
        help="also run Redis with limits.settle_delay_s set to this (A/B in one run)",
    )
    parser.add_argument("--quota", action="store_true", help="also run per-deployment quotas (memory, Redis)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        script = tmp / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(REQUEST))}\n'
            f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {KEY}"\n'
        )
        up_port = free_port()
        upstream, upstream_kind = start_upstream(tmp, up_port)
        variants = {
            "none": "",
            "memory": LIMITS.replace("{db}", str(tmp / "spend.db")),
            "redis": f'[redis]\nurl = "{args.redis}"\nkey_prefix = "{prefix}"\n'
            + LIMITS.replace("{db}", str(tmp / "unused.db")),
        }
        if args.settle_delay_ms:  # A/B: settles riding along with the next admission
            variants["redis-delay"] = variants["redis"].replace(
                "[limits]\n", f"[limits]\nsettle_delay_s = {args.settle_delay_ms / 1000}\n"
            )
        backend_extra: dict[str, str] = {}
        if args.quota:  # a backend quota only: the store call sits in dispatch, not the limits phase
            variants["quota"] = ""
            variants["quota-redis"] = f'[redis]\nurl = "{args.redis}"\nkey_prefix = "{prefix}q:"\n'
            backend_extra = {"quota": QUOTA, "quota-redis": QUOTA}
        procs, ports = [], {}
        try:
            for name, extra in variants.items():
                ports[name] = free_port()
                conf = tmp / f"{name}.toml"
                write_config(conf, ports[name], up_port, extra, backend_extra.get(name, ""))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", "serve", "--config", str(conf)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            wait_port(up_port)
            for port in ports.values():
                wait_port(port)
            urls = {n: f"http://127.0.0.1:{p}/v1/chat/completions" for n, p in ports.items()}
            for url in urls.values():
                wrk(url, 10, 2, script)  # warm-up
            results: dict[str, Any] = {"upstream": upstream_kind}
            # Variants interleaved over several rounds, median per variant: a burst of load from
            # elsewhere on a shared machine then hits one round of every variant, not one variant.
            rounds: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for conns in (1, args.connections):
                    for name, url in urls.items():
                        rounds.setdefault(f"{name}_c{conns}", []).append(wrk(url, conns, args.duration, script))
            for key, runs in rounds.items():
                results[key] = {m: statistics.median(r[m] for r in runs) for m in ("rps", "p50_ms", "p99_ms")}
                results[key]["non_2xx"] = sum(r["non_2xx"] for r in runs)
                results[key]["rounds"] = runs
            results["redis_ping_p50_ms"] = redis_round_trip_ms(args.redis)
        finally:
            for proc in (*procs, upstream):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    c = args.connections
    print(f"upstream: {results['upstream']}   machine: {os.cpu_count()} cores")
    print(f"{'':12}{'p50 @1 (ms)':>14}{'added (ms)':>12}{f'req/s @{c}':>12}{'non-2xx':>9}")
    base = results["none_c1"]["p50_ms"]
    for name in variants:
        one, many = results[f"{name}_c1"], results[f"{name}_c{c}"]
        print(
            f"{name:12}{one['p50_ms']:14.3f}{one['p50_ms'] - base:12.3f}{many['rps']:12.0f}"
            f"{one['non_2xx'] + many['non_2xx']:9d}"
        )
    share = results[f"redis_c{c}"]["rps"] / results[f"memory_c{c}"]["rps"]
    print(
        f"redis vs memory: added p50 {results['redis_c1']['p50_ms'] - results['memory_c1']['p50_ms']:.3f} ms, "
        f"throughput {share:.0%} of in-memory; one redis-py PING round trip: p50 {results['redis_ping_p50_ms']:.3f} ms"
    )
    if args.quota:
        q = results[f"quota-redis_c{c}"]["rps"] / results[f"quota_c{c}"]["rps"]
        print(
            f"deployment quota: memory adds {results['quota_c1']['p50_ms'] - base:.3f} ms p50, Redis "
            f"{results['quota-redis_c1']['p50_ms'] - base:.3f} ms; Redis throughput {q:.0%} of memory"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
