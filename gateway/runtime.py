"""The gateway's runtime state, built from a Config: backends, routes, keys, metrics, prober.

One object, owned by the aiohttp app (no module-level state), so a test can run several gateways
in one process and a reload can build a new one beside the old.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import TYPE_CHECKING, Any

from backends import backend_class, is_local_kind
from backends.base import Backend
from backends.health import HealthProber
from backends.load_signals import Load, LoadScraper
from gateway.config import Config
from gateway.keys import KeyTable, Principal
from gateway.limits.deployment_quota import DeploymentQuotas, build_quotas
from gateway.limits.phase import LimitsPhase, build_limits
from gateway.keystore import KeyStoreSync
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.phases import Phase, build_phases
from gateway.redis_client import make_redis
from gateway.resilience import Resilience

if TYPE_CHECKING:
    from redis.asyncio import Redis
from gateway.routing import Router


class Gateway:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        # A reload hands the old gateway's metrics over, so counters continue across it.
        self.metrics = metrics or Metrics()
        self.log = get_logger("switchyard")
        self.keys = KeyTable({k.sha256: Principal(k.name, k.team, frozenset(k.models)) for k in config.keys})
        self.backends: dict[str, Backend] = {}
        for b in config.backends:
            local = is_local_kind(b.kind) if b.local is None else b.local
            self.backends[b.name] = backend_class(b.kind)(b, b.timeouts or config.server.timeouts, local)
        self.router = Router.build(config, self.backends, self.metrics)
        # Engine load from each local engine's /metrics (backends/load_signals.py), per deployment.
        self.load_scraper = LoadScraper(list(self.backends.values()), config.load_signals, self._on_load, self.log)
        self.resilience = Resilience(config, self.router, self.metrics, self.log)  # breakers, retry budget
        self.prober = HealthProber(
            list(self.backends.values()), config.server.health_check_interval_s, self._on_probe
        )
        self.background: set[asyncio.Task[Any]] = set()
        self.requests_in_flight = 0  # inference requests not yet settled (a reload drains them)
        # Shared state for several processes; None = this process keeps its state in memory.
        self.redis: Redis | None = make_redis(config.redis) if config.redis is not None else None
        # Rate limits, budgets, spend (gateway/limits/); None when not configured. Read spend with
        # `await gateway.limits.spend(team=...)` / `(key=...)`.
        self.limits: LimitsPhase | None = build_limits(self)
        # Upstream quotas per deployment (backends[].limits), taken in dispatch; None when none set.
        self.quotas: DeploymentQuotas | None = build_quotas(self)
        self.phases: list[Phase] = build_phases(self)
        self.keystore = KeyStoreSync(self)  # admin-created API keys
        # Request ids: a random per-process prefix + a counter (unique, and far cheaper than uuid4).
        self._rid_prefix = os.urandom(6).hex()
        self._rid_next = itertools.count(1).__next__

    def new_request_id(self) -> str:
        return f"{self._rid_prefix}{self._rid_next():020x}"

    def _on_probe(self, backend: Backend, changed: bool) -> None:
        self.metrics.backend_up.labels(backend.name).set(1 if backend.healthy else 0)
        if changed:
            self.log.warning("backend_health", backend=backend.name, healthy=backend.healthy)
            self.resilience.on_backend_health(backend)

    def _on_load(self, backend: Backend, load: Load) -> None:
        for route in self.router.routes():
            for d in route.deployments:
                if d.backend is backend:
                    self.metrics.set_load(d.name, load)

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()
        self.prober.start()
        await self.load_scraper.start()
        if self.limits is not None:
            await self.limits.start()
        if self.quotas is not None:
            await self.quotas.start()
        await self.keystore.start()
        self.log.info(
            "gateway_started", models=self.router.aliases(), backends=list(self.backends), keys=len(self.keys)
        )

    async def stop(self) -> None:
        await self.prober.stop()
        await self.load_scraper.stop()
        for phase in self.phases:  # phases holding resources (worker threads) release them
            close = getattr(phase, "close", None)
            if close is not None:
                await close()
        await self.keystore.stop()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.limits is not None:
            await self.limits.stop()
        for backend in self.backends.values():
            await backend.close()
        for phase in self.phases:  # phases holding resources (exporters, pools) may close them
            close = getattr(phase, "close", None)
            if close is not None:
                await close()
        if self.redis is not None:
            await self.redis.aclose()

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        """Ready when every model has at least one deployment whose backend answered its probe."""
        per_model = {
            r.alias: self.prober.rounds > 0 and any(d.backend.healthy for d in r.deployments)
            for r in self.router.routes()
        }
        return all(per_model.values()), per_model

    def spawn(self, coro: Any) -> None:
        """Run work that must outlive a cancelled request (settling after a client disconnect)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class GatewayRef:
    """What the aiohttp app holds: the current Gateway. A config reload builds a new Gateway and
    swaps `current`; requests already running keep the one they started with."""

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway
