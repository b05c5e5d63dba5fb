"""Chaos scenario: steady streaming load through Switchyard while one of four simulated engines is
killed, restarted, made to return 500s, and made to hang.

    python -m loadtest.chaos [--rate 30] [--phase-s 8] [--ttfb 1] [--hedge-after 0.3] [--json out.json]

The four engines run as separate processes (`python -m loadtest.engine`), so one can really be
killed (SIGKILL) and restarted on the same port; faults go through `POST /sim/fault`. The gateway
runs in this process (its state, breakers included, can be read directly) and the load is an
open-loop arrival of streamed chat completions at `--rate` per second (aiohttp client, SSE parsed
for error events). Per phase it reports: requests, client-visible errors (non-200, an error event,
or a stream without [DONE]), errors after the faulty deployment was first taken out of rotation
(its breaker left `closed`, or the health probe marked it down), p50/p99
latency, and upstream attempts per client request (amplification).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from gateway.config import parse_config
from gateway.keys import hash_key
from gateway.logs import configure_logging
from gateway.server import RunningGateway, start_gateway

KEY = "sk-chaos"
ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "chat", "messages": [{"role": "user", "content": "status report"}], "max_tokens": 16, "stream": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineProc:
    def __init__(self, port: int, itl_s: float) -> None:
        self.port, self.itl_s = port, itl_s
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest.engine",
                "--port",
                str(self.port),
                "--itl",
                str(self.itl_s),
                "--output-tokens",
                "16",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.get(self.base + "/v1/models") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"engine on {self.port} did not start")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    async def fault(self, fault: dict | None) -> None:
        async with aiohttp.ClientSession() as s:
            if fault is None:
                async with s.delete(self.base + "/sim/fault") as r:
                    r.raise_for_status()
            else:
                async with s.post(self.base + "/sim/fault", json=fault) as r:
                    r.raise_for_status()


@dataclass
class Phase:
    name: str
    started: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    attempts_before: float = 0.0
    attempts_after: float = 0.0
    breaker_opened_at: float | None = None

    def report(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

        after_open = [e for e in self.errors if self.breaker_opened_at is not None and e[0] >= self.breaker_opened_at]
        return {
            "phase": self.name,
            "requests": self.requests,
            "errors": len(self.errors),
            "error_rate_pct": round(100 * len(self.errors) / max(1, self.requests), 3),
            "errors_after_breaker_open": len(after_open) if self.breaker_opened_at is not None else None,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "amplification": round((self.attempts_after - self.attempts_before) / max(1, self.requests), 3),
            "error_kinds": sorted({e[1] for e in self.errors}),
        }


def gateway_config(ports: list[int], ttfb_s: float, hedge_after_s: float | None = None) -> str:
    backends = "\n".join(
        f'[[backends]]\nname = "e{i}"\nkind = "vllm"\nurl = "http://127.0.0.1:{p}/v1"\n'
        f"timeouts = {{ connect_s = 1, ttfb_s = {ttfb_s}, idle_s = 5 }}\n"
        for i, p in enumerate(ports)
    )
    deployments = ", ".join(f'{{ backend = "e{i}", model = "sim" }}' for i in range(len(ports)))
    return f"""
[server]
log_level = "error"
health_check_interval_s = 1

{backends}
[[models]]
name = "chat"
deployments = [{deployments}]
{f"hedge_after_s = {hedge_after_s}" if hedge_after_s else ""}

[[teams]]
name = "chaos"

[[keys]]
name = "chaos"
team = "chaos"
sha256 = "{hash_key(KEY)}"

[resilience]
max_attempts = 3
budget_ratio = 0.2
"""


async def one_request(session: aiohttp.ClientSession, url: str, phases: list[Phase]) -> None:
    """Counted in the phase in which it ends (a stream cut by the kill belongs to "killed")."""
    t0 = time.monotonic()
    error = await _send(session, url)
    phase = phases[-1]
    phase.requests += 1
    if error is None:
        phase.latencies.append(time.monotonic() - t0)
    else:
        phase.errors.append((time.monotonic(), error))


async def _send(session: aiohttp.ClientSession, url: str) -> str | None:
    """None when the client got a whole answer, else what went wrong."""
    try:
        async with session.post(url, json=BODY, headers={"Authorization": f"Bearer {KEY}"}) as r:
            text = (await r.read()).decode()
            if r.status != 200:
                return f"status_{r.status}"
            if '"error"' in text:
                return "error_event"
            if "data: [DONE]" not in text:
                return "incomplete"
    except (TimeoutError, aiohttp.ClientError) as e:
        return type(e).__name__
    return None


def attempts_total(gw: RunningGateway) -> float:
    metric = gw.gateway.metrics.upstream_attempts
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


async def run(
    rate: float, phase_s: float, itl_s: float, ttfb_s: float, hedge_after_s: float | None = None
) -> list[dict]:
    configure_logging("error")
    ports = [free_port() for _ in range(4)]
    engines = [EngineProc(p, itl_s) for p in ports]
    await asyncio.gather(*(e.start() for e in engines))
    victim = engines[3]
    gw = await start_gateway(parse_config(gateway_config(ports, ttfb_s, hedge_after_s)), port=0)
    route = gw.gateway.router.get("chat")
    assert route is not None
    victim_d = next(d for d in route.deployments if d.backend.name == "e3")
    url = gw.url + "/chat/completions"
    phases: list[Phase] = []
    current: list[Phase] = []
    stop = asyncio.Event()

    async def load() -> None:
        tasks: set[asyncio.Task] = set()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            interval, next_at = 1.0 / rate, time.monotonic()
            while not stop.is_set():
                t = asyncio.create_task(one_request(session, url, current))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.gather(*tasks)

    async def watch_breaker() -> None:
        while not stop.is_set():
            ph = current[-1] if current else None
            out = victim_d.breaker is not None and victim_d.breaker.state != "closed"
            if ph is not None and ph.breaker_opened_at is None and (out or not victim_d.backend.healthy):
                ph.breaker_opened_at = time.monotonic()
            await asyncio.sleep(0.01)

    async def phase(name: str, action) -> None:
        if phases:
            phases[-1].attempts_after = attempts_total(gw)
        ph = Phase(name, started=time.monotonic(), attempts_before=attempts_total(gw))
        phases.append(ph)
        current.append(ph)
        if action is not None:
            await action()
        await asyncio.sleep(phase_s)

    async def restart() -> None:
        await victim.start()

    current.append(Phase("warmup"))
    loader = asyncio.create_task(load())
    watcher = asyncio.create_task(watch_breaker())
    await asyncio.sleep(1.0)
    try:
        await phase("baseline", None)
        await phase("killed", _async(victim.kill))
        await phase("restarted", restart)
        await phase("500s", lambda: victim.fault({"kind": "status", "status": 500}))
        await phase("recovered", lambda: victim.fault(None))
        await phase("hang", lambda: victim.fault({"kind": "hang"}))
        await phase("recovered-2", lambda: victim.fault(None))
    finally:
        stop.set()
        await loader
        watcher.cancel()
        phases[-1].attempts_after = attempts_total(gw)
        await gw.stop()
        for e in engines:
            e.kill()
    return [p.report() for p in phases]


def _async(fn):
    async def call() -> None:
        fn()

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="client requests per second (open loop)")
    ap.add_argument("--phase-s", type=float, default=8.0, help="seconds per phase")
    ap.add_argument("--itl", type=float, default=0.01, help="engine inter-token delay (16 tokens per answer)")
    ap.add_argument("--ttfb", type=float, default=1.0, help="gateway time-to-first-byte timeout")
    ap.add_argument("--hedge-after", type=float, default=None, help="hedge_after_s for the model (default: no hedging)")
    ap.add_argument("--json", help="write the per-phase results here")
    args = ap.parse_args()
    results = asyncio.run(run(args.rate, args.phase_s, args.itl, args.ttfb, args.hedge_after))
    total = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results)
    print(
        f"{'phase':<12} {'reqs':>5} {'errors':>6} {'err%':>7} {'after-open':>10} {'p50 ms':>8} {'p99 ms':>8} {'ampl':>6}"
    )
    for r in results:
        after = "-" if r["errors_after_breaker_open"] is None else r["errors_after_breaker_open"]
        print(
            f"{r['phase']:<12} {r['requests']:>5} {r['errors']:>6} {r['error_rate_pct']:>7} {after:>10} "
            f"{r['p50_ms']:>8} {r['p99_ms']:>8} {r['amplification']:>6}  {','.join(r['error_kinds'])}"
        )
    print(f"total: {total} requests, {errors} client-visible errors ({100 * errors / max(1, total):.3f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "phases": results}, indent=2))


if __name__ == "__main__":
    main()
