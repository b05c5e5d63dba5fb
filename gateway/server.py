"""Running the gateway: in the background of an existing loop (tests, benchmarks, the swarm) or as
the main program (`switchyard serve`)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.app import build_app
from gateway.app_state import GATEWAY
from gateway.config import Config
from gateway.httpguard import ConnectionGuard, GuardedRunner
from gateway.reload import Reloader, install_reloader, on_sighup
from gateway.runtime import Gateway


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: web.AppRunner
    host: str
    port: int
    reloader: Reloader | None = None

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def current(self) -> Gateway:
        """The Gateway serving new requests (`gateway` is the first one; a reload swaps this)."""
        return self.runner.app[GATEWAY].current

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    config_path: str | None = None,
    reuse_port: bool = False,
) -> RunningGateway:
    """Start serving on (host, port) from the config unless given; port 0 picks a free port.
    With `config_path`, SIGHUP / POST /admin/reload re-read that file (gateway/reload.py).
    `reuse_port`: several worker processes share the port (SO_REUSEPORT, gateway/workers.py)."""
    gateway = Gateway(config)
    app = build_app(gateway)
    reloader = install_reloader(app, app[GATEWAY], config_path) if config_path else None
    # handler_cancellation: a client that disconnects cancels its handler at once, which closes the
    # upstream request so the engine frees the GPU slot (aiohttp's default is to keep running).
    # GuardedRunner: connection cap, header/body/keep-alive timeouts, half-close, parser errors
    # without secrets (gateway/httpguard.py). auto_decompress off: compressed bodies are inflated
    # by gateway/request.py with the size limit applied to the inflated bytes.
    guard = ConnectionGuard(config.server, gateway.metrics.registry)
    runner = GuardedRunner(app, guard, handler_cancellation=True, access_log=None, auto_decompress=False)
    await runner.setup()
    host = host or config.server.host
    site = web.TCPSite(
        runner,
        host,
        config.server.port if port is None else port,
        reuse_address=True,
        reuse_port=reuse_port or None,
        backlog=1024,
    )
    await site.start()
    bound = runner.addresses[0][1]
    return RunningGateway(gateway, runner, host, bound, reloader)


async def serve(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    before_start: Callable[[], Awaitable[Callable[[], Awaitable[None]] | None]] | None = None,
    config_path: str | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP reloads `config_path`. `before_start` is awaited first
    (e.g. to start simulated engines) and may return an async cleanup callable."""
    cleanup = await before_start() if before_start else None
    running = await start_gateway(config, host, port, config_path, reuse_port)
    running.gateway.log.info("listening", url=running.base)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if running.reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, on_sighup(running.reloader))
    try:
        await stop.wait()
    finally:
        running.current.log.info("shutting_down")
        await running.stop()
        if cleanup:
            await cleanup()
