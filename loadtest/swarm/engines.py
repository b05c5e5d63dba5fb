"""Where the swarm's SIMULATED engines run: in the swarm's own event loop, or in a child process.

The openai SDK's per-chunk parsing keeps the swarm's loop busy; engines sharing that loop wake late
and their simulated step times stretch. A child process gives the engines an event loop of their
own, so their timing (TTFT, queueing, the prefix-cache effect) stays faithful while the agents are
CPU-bound. The swarm reads engines only over HTTP (/metrics, /sim/stats), so both modes look alike.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from loadtest.cluster import announce, simulated_engine_configs, with_urls
from loadtest.engine import EngineConfig, SimEngine, start_engine


@dataclass(frozen=True)
class EngineRef:
    name: str  # the backend it stands in for
    base: str  # http://host:port
    profile: str


class EngineHost:
    """Start the engines for a config's loopback backends on free ports; stop them all."""

    def __init__(self, separate_process: bool) -> None:
        self.separate_process = separate_process
        self._engines: list[SimEngine] = []
        self._proc: Any = None
        self._conn: Any = None

    async def start(self, config: Config, **engine_options: object) -> tuple[Config, list[EngineRef]]:
        plan = simulated_engine_configs(config, **engine_options)
        if not plan:
            raise ValueError("the config has no loopback backend to simulate")
        if self.separate_process:
            bases = await self._spawn({n: (c.to_dict(), h) for n, (c, h, _) in plan.items()})
        else:
            bases = {}
            try:
                for name, (cfg, host, _) in plan.items():
                    engine = await start_engine(cfg, host=host, port=0)
                    self._engines.append(engine)
                    bases[name] = engine.base
            except BaseException:
                await self.stop()
                raise
        refs = [EngineRef(name, bases[name], cfg.profile) for name, (cfg, _, _) in plan.items()]
        for r in refs:
            announce(r.name, r.profile, f"{r.base}/v1")
        return with_urls(config, {r.name: f"{r.base}/v1" for r in refs}), refs

    async def _spawn(self, plan: dict[str, tuple[dict[str, Any], str]]) -> dict[str, str]:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(plan, child), daemon=True, name="swarm-engines")
        self._proc.start()
        child.close()
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._recv, 60.0)
        if not isinstance(ready, dict):
            await self.stop()
            raise RuntimeError(f"simulated engines did not start: {ready}")
        return ready

    def _recv(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            return "timeout"
        try:
            return self._conn.recv()
        except EOFError:
            return "the engine process exited"

    async def stop(self) -> None:
        for e in self._engines:
            await e.stop()
        self._engines.clear()
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                self._conn.send("stop")
            except OSError:
                pass
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 10.0)
            if proc.is_alive():
                proc.terminate()
            self._conn.close()


def _child(plan: dict[str, tuple[dict[str, Any], str]], conn: Any) -> None:
    """The engine process: start every engine, report their bases, serve until told to stop."""

    async def main() -> None:
        engines: list[SimEngine] = []
        try:
            bases = {}
            for name, (options, host) in plan.items():
                engine = await start_engine(EngineConfig(**options), host=host, port=0)
                engines.append(engine)
                bases[name] = engine.base
            conn.send(bases)
            await asyncio.get_running_loop().run_in_executor(None, _wait_stop, conn)
        except Exception as e:  # reported to the parent, which raises
            conn.send(f"{type(e).__name__}: {e}")
        finally:
            for engine in engines:
                await engine.stop()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _wait_stop(conn: Any) -> None:
    try:
        conn.recv()
    except EOFError:  # the parent went away
        pass
