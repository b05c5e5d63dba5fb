"""`switchyard serve --workers N`: N gateway processes on one port, under a small supervisor.

Each worker is `switchyard serve --worker` (a fresh interpreter) listening with SO_REUSEPORT on the
same host:port, so the kernel spreads connections over them. The supervisor:
- starts the simulated engines once when `--simulate` is given;
- exports PROMETHEUS_MULTIPROC_DIR to the workers (a fresh temp dir unless already set), so every
  worker's /metrics shows the sum over all workers (prometheus-client multiprocess mode, see
  `gateway/metrics.py` render);
- forwards SIGHUP to every worker (each reloads its config: gateway/reload.py); a worker that gets
  `POST /admin/reload` validates the file and signals the supervisor, so all workers reload;
- restarts a worker that died (after 1 s), and on SIGINT/SIGTERM stops them all.

State shared between workers goes through Redis (`[redis]`): admin-created keys today; rate limits,
budgets and caches use the same client. Without Redis each worker keeps its own in-memory state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.logs import get_logger

SUPERVISOR_ENV = "SWITCHYARD_SUPERVISOR_PID"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_DELAY_S = 1.0


def metrics_dir() -> Path:
    """The multiprocess metrics dir: $PROMETHEUS_MULTIPROC_DIR (emptied) or a fresh temp dir."""
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="switchyard-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def worker_command(config_path: str, host: str | None, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", config_path, "--worker", "--port", str(port)]
    return cmd + (["--host", host] if host else [])


async def supervise(
    config_path: str,
    workers: int,
    host: str | None,
    port: int,
    before_start: Callable[[], Awaitable[Callable[[], Awaitable[None]] | None]] | None = None,
) -> None:
    from prometheus_client import multiprocess

    log = get_logger("switchyard.supervisor")
    cleanup = await before_start() if before_start else None
    mdir = metrics_dir()
    env = {**os.environ, MULTIPROC_ENV: str(mdir), SUPERVISOR_ENV: str(os.getpid())}
    cmd = worker_command(config_path, host, port)
    procs: dict[int, asyncio.subprocess.Process] = {}
    stopping = asyncio.Event()

    async def run_slot(slot: int) -> None:
        while not stopping.is_set():
            proc = await asyncio.create_subprocess_exec(*cmd, env=env)
            procs[slot] = proc
            log.info("worker_started", worker=slot, pid=proc.pid)
            code = await proc.wait()
            multiprocess.mark_process_dead(proc.pid, str(mdir))  # its live gauges leave the sums
            if stopping.is_set():
                return
            log.error("worker_exited", worker=slot, pid=proc.pid, code=code, restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)

    def forward(sig: int) -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, forward, signal.SIGHUP)
    slots = [asyncio.create_task(run_slot(i)) for i in range(workers)]
    log.info("supervisor_started", workers=workers, port=port, metrics_dir=str(mdir))
    try:
        await stopping.wait()
    finally:
        log.info("supervisor_stopping")
        forward(signal.SIGTERM)
        await asyncio.gather(*slots, return_exceptions=True)
        if cleanup:
            await cleanup()


def signal_supervisor() -> bool:
    """From a worker: ask the supervisor to reload every worker. False when not under one."""
    pid = os.environ.get(SUPERVISOR_ENV)
    if not pid:
        return False
    os.kill(int(pid), signal.SIGHUP)
    return True
