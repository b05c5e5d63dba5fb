"""SimEngine: one simulated inference server (aiohttp app + scheduler + counters)."""

from __future__ import annotations

import asyncio
import logging
import random
import string
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from . import metrics, wire
from .config import EngineConfig
from .faults import Fault, FaultInjector
from .handlers import Inference
from .prefix_cache import PrefixCache
from .ratelimit import RateLimiter
from .scheduler import Scheduler
from .stats import EngineStats
from .textgen import TextGen

log = logging.getLogger("loadtest.engine")

SHUTDOWN_TIMEOUT_S = 0.25  # in-flight handlers are cancelled this long after stop()
_OWNER = {
    "vllm": "vllm",
    "sglang": "sglang",
    "tgi": "tgi",
    "llamacpp": "llamacpp",
    "plain": "plain",
    "remote": "system",
}
_ALNUM = string.ascii_letters + string.digits


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class SimEngine:
    """A simulated OpenAI-compatible inference server. Use start_engine() to run one."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        cfg = self.config = config or EngineConfig()
        self.stats = EngineStats()
        self.prefix_cache = PrefixCache(cfg.prefix_cache_blocks)
        self.textgen = TextGen(cfg.seed, cfg.output_tokens, cfg.output_tokens_max)
        self.faults = FaultInjector(cfg.seed)
        self.scheduler = Scheduler(cfg, self.stats, self.prefix_cache)
        self.limiter = (
            RateLimiter(cfg.rpm_limit, cfg.tpm_limit) if cfg.is_remote and (cfg.rpm_limit or cfg.tpm_limit) else None
        )
        self._ids = random.Random(cfg.seed)
        self.created_at = time.time()
        self.host: str | None = None
        self.port: int = 0
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------- properties
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def new_id(self, kind: str) -> str:
        """Seeded ids in the imitated server's style."""
        if self.config.is_remote:
            if kind == "tool":
                return "call_" + "".join(self._ids.choices(_ALNUM, k=24))
            return f"{kind}-" + "".join(self._ids.choices(_ALNUM, k=29))
        prefix = "chatcmpl-tool" if kind == "tool" else kind
        return f"{prefix}-{self._ids.getrandbits(128):032x}"

    @staticmethod
    def created_now() -> int:
        return int(time.time())

    def sim_now(self) -> float:
        """Simulated seconds (monotonic), used by rate-limit windows."""
        return asyncio.get_running_loop().time() * self.config.time_scale

    # ---------------------------------------------------------------- control
    def set_fault(self, fault: Fault | None) -> None:
        """Replace the current fault (None clears it)."""
        self.faults.set(fault)

    def clear_fault(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Zero the counters, empty the prefix cache and rate-limit windows."""
        self.stats.reset()
        self.prefix_cache.clear()
        if self.limiter is not None:
            self.limiter.reset()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimEngine:
        runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving; cancels in-flight requests and the scheduler task."""
        await self.scheduler.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimEngine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------- app
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        inference = Inference(self)
        r = app.router
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            r.add_post(path, inference.handle)
        r.add_get("/v1/models", inference.guarded(self._models))
        r.add_get("/health", inference.guarded(self._health))
        if metrics.has_metrics(self.config.profile):
            r.add_get("/metrics", inference.guarded(self._metrics))
        if self.config.profile in ("vllm", "sglang"):
            r.add_get("/version", self._version)
        r.add_post("/sim/fault", self._sim_fault)
        r.add_delete("/sim/fault", self._sim_fault_clear)
        r.add_get("/sim/fault", self._sim_fault_get)
        r.add_get("/sim/stats", self._sim_stats)
        r.add_post("/sim/reset", self._sim_reset)
        r.add_get("/sim/config", self._sim_config)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        st = self.stats
        st.requests_by_path[request.path] = st.requests_by_path.get(request.path, 0) + 1
        cfg = self.config
        names = cfg.served_model_names or [cfg.model_name]
        body = wire.models_body(
            names, _OWNER[cfg.profile], int(self.created_at), cfg.max_model_len, self.new_id("modelperm"), cfg.is_remote
        )
        return web.Response(body=body, content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        if self.config.profile == "llamacpp":
            return _json({"status": "ok"})
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": "0.0.0+sim"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.config, self.stats, self.created_at) or b""
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _sim_fault(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read() or b"{}")
            fault = Fault.from_dict(data if isinstance(data, dict) else {})
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            return _json({"error": {"message": str(exc), "type": "BadRequestError", "param": None, "code": 400}}, 400)
        self.set_fault(fault)
        return _json({"fault": fault.to_dict() if fault else None})

    async def _sim_fault_clear(self, request: web.Request) -> web.Response:
        self.clear_fault()
        return _json({"fault": None})

    async def _sim_fault_get(self, request: web.Request) -> web.Response:
        fault = self.faults.fault
        return _json({"fault": fault.to_dict() if fault else None})

    async def _sim_stats(self, request: web.Request) -> web.Response:
        snap = self.stats.snapshot()
        snap["prefix_cache_blocks_used"] = len(self.prefix_cache)
        snap["faults_fired"] = self.faults.fired
        snap["profile"] = self.config.profile
        return _json(snap)

    async def _sim_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json({"ok": True})

    async def _sim_config(self, request: web.Request) -> web.Response:
        return _json(self.config.to_dict())


async def start_engine(config: EngineConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimEngine:
    """Start a simulated engine on the running loop; port 0 picks a free port."""
    return await SimEngine(config).start(host, port)


async def start_engines(configs: Iterable[EngineConfig], host: str = "127.0.0.1") -> list[SimEngine]:
    """Start one engine per config, each on its own free port."""
    engines: list[SimEngine] = []
    try:
        for cfg in configs:
            engines.append(await start_engine(cfg, host, 0))
    except BaseException:
        for eng in engines:
            await eng.stop()
        raise
    return engines
