"""Throughput of `switchyard serve --workers N`: the same wrk load against 1 worker, then 2 (then
more with --max-workers), in one run.

    python -m loadtest.workers_bench [--duration 10] [--connections 64] [--max-workers 2] [--rounds 3]
                                     [--json out.json]

The upstream is nginx answering a canned chat completion (or, without nginx, the zero-delay
simulated engine), so the gateway is the bottleneck. Every worker count gets a fresh
`switchyard serve --workers N` process tree and a 2 s warm-up. The worker counts are alternated for
`--rounds` rounds (a shared, noisy machine drifts: alternating spreads the drift over all counts);
reported: the median requests/s and p99 of each count and the speed-up over one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtest.overhead import free_port, start_gateway, start_upstream, wait_port, write_wrk_script, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    results: dict[str, Any] = {"cpus": os.cpu_count(), "connections": args.connections}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        script = write_wrk_script(tmp)
        up_port = free_port()
        upstream, results["upstream"] = start_upstream(tmp, up_port)
        try:
            wait_port(up_port)
            for n in [n for _ in range(args.rounds) for n in range(1, args.max_workers + 1)]:
                port = free_port()
                gw = start_gateway(tmp, port, up_port, ("--workers", str(n)))
                try:
                    wait_port(port)
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wrk(url, args.connections, 2, script)  # warm-up: every worker's pools
                    results.setdefault(f"runs_{n}", []).append(wrk(url, args.connections, args.duration, script))
                finally:
                    gw.send_signal(signal.SIGTERM)
                    gw.wait(timeout=15)
        finally:
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(timeout=10)
    for n in range(1, args.max_workers + 1):
        runs = sorted(results[f"runs_{n}"], key=lambda r: r["rps"])
        results[f"workers_{n}"] = runs[len(runs) // 2]
    base = results["workers_1"]["rps"]
    print(f"upstream: {results['upstream']}   machine: {results['cpus']} cores   {args.connections} connections")
    for n in range(1, args.max_workers + 1):
        r = results[f"workers_{n}"]
        every = " ".join(f"{x['rps']:.0f}" for x in results[f"runs_{n}"])
        print(
            f"workers={n}: median {r['rps']:8.0f} req/s  p99 {r['p99_ms']:7.2f} ms  x{r['rps'] / base:.2f}"
            f"  non-2xx {r['non_2xx']}  (rounds: {every})"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
