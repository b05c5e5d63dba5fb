"""A/B overhead: the same benchmark as loadtest/overhead.py against two versions of the gateway at
once (a baseline checkout and this tree), interleaved round by round so machine load affects both.

    git worktree add /tmp/baseline <commit>
    python -m loadtest.overhead_ab --baseline /tmp/baseline [--rounds 4] [--duration 5] [--connections 50]

Each round runs wrk against A then B (then B then A in the next round), at 1 connection (p50
latency) and at N connections (req/s); the report gives the median of the rounds for each.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest.overhead import free_port, start_upstream, wait_port, write_config, write_wrk_script, wrk


def _gateway(cwd: Path, conf: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): per-request cost that does not depend
    on how busy the rest of the machine is, unlike req/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--candidate", type=Path, help="the version measured against it (default: this tree)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    here = (args.candidate or Path(__file__).resolve().parent.parent).resolve()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        script = write_wrk_script(tmp)
        up_port = free_port()
        upstream, kind = start_upstream(tmp, up_port)
        procs, urls = [upstream], {}
        try:
            for name, cwd in (("A", args.baseline.resolve()), ("B", here)):
                port = free_port()
                conf = tmp / f"gateway-{name}.toml"
                write_config(conf, port, up_port)
                procs.append(_gateway(cwd, conf))
                urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
                wait_port(port)
            for url in urls.values():
                wrk(url, 10, 2, script)  # warm-up
            p50: dict[str, list[float]] = {"A": [], "B": []}
            rps: dict[str, list[float]] = {"A": [], "B": []}
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            pids = {"A": procs[1].pid, "B": procs[2].pid}
            for r in range(args.rounds):
                order = ("A", "B") if r % 2 == 0 else ("B", "A")
                for name in order:
                    p50[name].append(wrk(urls[name], 1, args.duration, script)["p50_ms"])
                for name in order:
                    before = cpu_s(pids[name])
                    result = wrk(urls[name], args.connections, args.duration, script)
                    rps[name].append(result["rps"])
                    cpu[name].append((cpu_s(pids[name]) - before) / (result["rps"] * args.duration) * 1e6)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    print(f"upstream: {kind}   machine: {os.cpu_count()} cores   rounds: {args.rounds} x {args.duration}s")
    print(f"A = {args.baseline}   B = {here}")
    for name in ("A", "B"):
        print(
            f"{name}: p50 @1 conn {statistics.median(p50[name]):.3f} ms (rounds {', '.join(f'{v:.3f}' for v in p50[name])})"
            f"   req/s @{args.connections} {statistics.median(rps[name]):.0f} "
            f"(rounds {', '.join(f'{v:.0f}' for v in rps[name])})   "
            f"CPU per request {statistics.median(cpu[name]):.0f} us"
        )
    print(
        f"B/A: p50 {statistics.median(p50['B']) / statistics.median(p50['A']):.3f}   "
        f"req/s {statistics.median(rps['B']) / statistics.median(rps['A']):.3f}   "
        f"CPU/request {statistics.median(cpu['B']) / statistics.median(cpu['A']):.3f}"
    )


if __name__ == "__main__":
    main()
