"""Hot reload: SIGHUP or `POST /admin/reload` re-reads the config file and swaps the Gateway.

The file is read and validated in an executor (file I/O off the event loop). An invalid file is
rejected with every problem listed and the running config keeps serving. A valid one builds a new
Gateway beside the old (the metrics registry is handed over, so counters continue), starts it, waits
for its first health-probe round, and swaps `GatewayRef.current` (one assignment: atomic on the
event loop). Requests already running hold the old Gateway and finish on it; once they have drained
(or after `drain_timeout_s`) the old one is stopped. `server.host/port` cannot change without a
restart: a reload that changes them is applied otherwise and logged as a warning.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Config, ConfigError, load_config
from gateway.runtime import Gateway, GatewayRef
from gateway.workers import SUPERVISOR_ENV, signal_supervisor

FIRST_PROBE_WAIT_S = 5.0


class Reloader:
    def __init__(self, ref: GatewayRef, path: str | Path, drain_timeout_s: float = 900.0) -> None:
        self.ref = ref
        self.path = Path(path)
        self.drain_timeout_s = drain_timeout_s
        self.reloads = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def validate(self) -> Config:
        """Read and validate the file; raise ConfigError listing every problem."""
        return await asyncio.get_running_loop().run_in_executor(None, load_config, self.path)

    async def reload(self, reason: str = "admin") -> Gateway:
        async with self._lock:  # two reloads at once would both drain the same old gateway
            old = self.ref.current
            try:
                config = await self.validate()
            except ConfigError as e:
                old.metrics.count(old.metrics.config_reloads, "rejected")
                old.log.error("config_reload_rejected", reason=reason, path=str(self.path), errors=e.problems)
                raise
            new: Gateway | None = None
            try:
                new = Gateway(config, metrics=old.metrics, previous=old)  # metrics and limits state go over
                await new.start()
                await _first_probe(new)
            except Exception:  # e.g. a phase that cannot build or start: keep serving on the old gateway
                old.metrics.count(old.metrics.config_reloads, "rejected")
                old.log.exception("config_reload_failed", reason=reason)
                if new is not None:
                    await new.stop()
                raise
            new.adopt_state(old)  # stored Responses (memory) carry over
            self.ref.current = new
            old.retire()  # its batch runner claims no more lines; the new one takes over (leases)
            self.reloads += 1
            new.metrics.count(new.metrics.config_reloads, "ok")
            if (config.server.host, config.server.port) != (old.config.server.host, old.config.server.port):
                new.log.warning(
                    "config_reload_listen_address_unchanged", detail="server.host/port take effect only on restart"
                )
            new.log.info(
                "config_reloaded",
                reason=reason,
                path=str(self.path),
                models=new.router.aliases(),
                draining=old.requests_in_flight,
            )
            task = asyncio.get_running_loop().create_task(self._drain(old))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return new

    async def _drain(self, old: Gateway) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            while old.requests_in_flight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            if old.requests_in_flight > 0:
                old.log.warning("config_reload_drain_timeout", still_running=old.requests_in_flight)
            await old.stop()

    async def close(self) -> None:
        """On shutdown: stop draining gateways at once."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _first_probe(gw: Gateway) -> None:
    deadline = time.monotonic() + FIRST_PROBE_WAIT_S
    while gw.prober.rounds == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


RELOADER = web.AppKey("reloader", Reloader)


def install_reloader(app: web.Application, ref: GatewayRef, path: str | Path) -> Reloader:
    reloader = Reloader(ref, path)
    app[RELOADER] = reloader

    async def on_cleanup(app: web.Application) -> None:
        await reloader.close()

    app.on_cleanup.append(on_cleanup)
    return reloader


def on_sighup(reloader: Reloader) -> Any:
    """A signal handler: start a reload; a rejected file is logged (the old config keeps serving)."""

    def handler() -> None:
        async def run() -> None:
            try:
                await reloader.reload(reason="SIGHUP")
            except ConfigError:
                pass  # logged by reload()
            except Exception:
                reloader.ref.current.log.exception("config_reload_failed", reason="SIGHUP")

        task = asyncio.get_running_loop().create_task(run())
        reloader._tasks.add(task)
        task.add_done_callback(reloader._tasks.discard)

    return handler


async def admin_reload(request: web.Request) -> web.Response:
    """POST /admin/reload: 200 with the new models, or 400 listing every problem in the file."""
    from gateway.admin import json_response  # admin imports this module for its route table

    reloader = request.app.get(RELOADER)
    if reloader is None:
        return json_response(
            {
                "error": {
                    "message": "This gateway was not started from a config file; nothing to reload.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "reload_unavailable",
                }
            },
            status=409,
        )
    try:
        if os.environ.get(SUPERVISOR_ENV):  # one of several workers: check here, then reload them all
            await reloader.validate()
            signal_supervisor()
            return json_response({"status": "reloading", "workers": "all"}, status=202)
        gw = await reloader.reload(reason="admin")
    except ConfigError as e:
        return json_response(
            {
                "error": {
                    "message": e.render(),
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_config",
                },
                "errors": [{"location": loc, "message": msg} for loc, msg in e.problems],
            },
            status=400,
        )
    except Exception as e:  # the new config is valid but could not start; the old one keeps serving
        return json_response(
            {
                "error": {
                    "message": f"The new config could not start ({type(e).__name__}); the running config is unchanged.",
                    "type": "server_error",
                    "param": None,
                    "code": "reload_failed",
                }
            },
            status=500,
        )
    return json_response({"status": "reloaded", "reloads": reloader.reloads, "models": gw.router.aliases()})
