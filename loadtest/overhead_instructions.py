"""CPU instructions per request, counted by valgrind (callgrind), for one or more gateway versions.

    git worktree add /tmp/baseline <commit>
    python -m loadtest.overhead_instructions /tmp/baseline . [--requests 100] [--log-level info]

On a shared machine wall-clock figures (loadtest/overhead_ab.py's req/s, even CPU seconds per
request) move by 20-40% from one minute to the next; an instruction count does not depend on what
else runs (repeatable within ~4% here: hash seeds and GC timing), so a 5% change in the hot path is
visible. Each version runs as `switchyard serve` under callgrind with instrumentation off while it
starts; it is switched on (`callgrind_control -i on`) only around `--requests` sequential
non-streamed chat requests (after a warm-up), to the same zero-delay simulated engine. Counts
include everything the gateway process does for those requests: aiohttp, the event loop, the log
line, metrics. Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from loadtest.overhead import KEY, free_port, start_upstream, wait_port, write_config

BODY = {"model": "bench", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


async def _drive(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(url, json=BODY, headers={"Authorization": f"Bearer {KEY}"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"{r.status}: {await r.text()}")
                await r.read()


def _total(out: Path) -> int:
    """Instructions in callgrind's dump files (`summary:` / `totals:` lines)."""
    total = 0
    for f in out.parent.glob(out.name + "*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def measure(cwd: Path, tmp: Path, upstream_port: int, requests: int, log_level: str) -> int:
    port = free_port()
    conf = tmp / f"gateway-{port}.toml"
    write_config(conf, port, upstream_port)
    conf.write_text(conf.read_text().replace('log_level = "info"', f'log_level = "{log_level}"'))
    out = tmp / f"callgrind-{port}.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = subprocess.Popen(
        [*cmd, sys.executable, "-m", "gateway", "serve", "--config", str(conf)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=300)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(_drive(url, 30))  # warm-up: imports, pools, caches
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        asyncio.run(_drive(url, requests))
        subprocess.run([*control, "-i", "off", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*control, "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return _total(out) // requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="+", type=Path, help="checkouts to measure (the first is the reference)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--log-level", default="info", help="info: the per-request log line is written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up_port = free_port()
        upstream, kind = start_upstream(tmp, up_port)
        try:
            wait_port(up_port)
            counts = []
            for cwd in args.versions:
                t0 = time.monotonic()
                counts.append(measure(cwd.resolve(), tmp, up_port, args.requests, args.log_level))
                ratio = counts[-1] / counts[0]
                took = time.monotonic() - t0
                print(f"{str(cwd):40s} {counts[-1] / 1e3:8.0f}k instructions/request  x{ratio:.3f}  ({took:.0f} s)")
        finally:
            upstream.terminate()
    print(f"upstream: {kind}; {args.requests} sequential requests per version; log level {args.log_level}")


if __name__ == "__main__":
    main()
