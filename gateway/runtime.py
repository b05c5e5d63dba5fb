"""The gateway's runtime state, built from a Config: backends, routes, keys, metrics, prober.

One object, owned by the aiohttp app (no module-level state), so a test can run several gateways
in one process and a reload can build a new one beside the old.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from backends import backend_class, is_local_kind
from backends.base import Backend
from backends.health import HealthProber
from backends.load_signals import Load, LoadScraper
from backends.registry import DeploymentRegistry
from gateway.admission import Admission, Priorities, build_admission
from gateway.apis import ApiAdapter, build_adapters
from gateway.batch import BatchService, build_batch
from gateway.config import Config
from gateway.keys import KeyTable, Principal
from gateway.keystore import KeyStoreSync
from gateway.limits.deployment_quota import DeploymentQuotas, build_quotas
from gateway.limits.estimate import bytes_counter
from gateway.limits.estimator import Estimator
from gateway.limits.phase import LimitsPhase, build_limits
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.phases import Phase, build_phases
from gateway.redis_client import make_redis
from gateway.resilience import Resilience

if TYPE_CHECKING:
    from redis.asyncio import Redis
from gateway.routing import Router


class Gateway:
    def __init__(self, config: Config, metrics: Metrics | None = None, previous: "Gateway | None" = None) -> None:
        self.config = config
        # A reload hands the old gateway's metrics over, so counters continue across it.
        self.metrics = metrics or Metrics()
        self.log = get_logger("switchyard")
        self.keys = KeyTable({k.sha256: Principal(k.name, k.team, frozenset(k.models)) for k in config.keys})
        self.backends: dict[str, Backend] = {}
        for b in config.backends:
            local = is_local_kind(b.kind) if b.local is None else b.local
            backend = self.backends[b.name] = backend_class(b.kind)(b, b.timeouts or config.server.timeouts, local)
            backend.max_body_bytes = config.server.max_upstream_body_bytes
            backend.max_event_bytes = config.server.max_upstream_event_bytes
        # One Deployment per (backend, upstream model), shared by every alias routing to it.
        self.router = Router.build(config, DeploymentRegistry(self.backends), self.metrics)
        self.estimator = Estimator(config)  # the token estimate, shared by limits, quotas, the queue
        # Engine load from each local engine's /metrics (backends/load_signals.py), per deployment.
        self.load_scraper = LoadScraper(list(self.backends.values()), config.load_signals, self._on_load, self.log)
        self.resilience = Resilience(config, self.router, self.metrics, self.log)  # breakers, retry budget
        self.prober = HealthProber(list(self.backends.values()), config.server.health_check_interval_s, self._on_probe)
        self.background: set[asyncio.Task[Any]] = set()
        self.requests_in_flight = 0  # inference requests not yet settled (a reload drains them)
        # Shared state for several processes; None = this process keeps its state in memory.
        self.redis: Redis | None = make_redis(config.redis) if config.redis is not None else None
        # Rate limits, budgets, spend (gateway/limits/); None when not configured. Read spend with
        # `await gateway.limits.spend(team=...)` / `(key=...)`.
        # `previous` (a reload) hands its limits state over: spend, reservations, buckets.
        self.limits: LimitsPhase | None = build_limits(self, previous)
        # Upstream quotas per deployment (backends[].limits), taken in dispatch; None when none set.
        self.quotas: DeploymentQuotas | None = build_quotas(self, previous)
        self.phases: list[Phase] = build_phases(self)
        # Priority classes and the admission queue (gateway/admission/); admission None = disabled.
        self.priorities = Priorities(config)
        self.admission: Admission | None = build_admission(self)
        self.keystore = KeyStoreSync(self)  # admin-created API keys
        # The OpenAI Batch API (gateway/batch/): its store and the runner of its lines; None = off.
        self.batch: BatchService | None = build_batch(self)
        # Other client APIs over chat completions (gateway/apis): the Responses API (its state store,
        # closed at stop) and Anthropic's Messages API; per API, the aliases with a deployment that
        # serves it natively (pass-through); the aliases whose answers carry the alias in `model`.
        self.apis: dict[str, ApiAdapter] = build_adapters(config.responses, self.redis, self._count_tokens)
        self.native_aliases: dict[str, frozenset[str]] = {
            api: frozenset(
                r.alias for r in self.router.routes() if any(api in d.backend.native_apis for d in r.deployments)
            )
            for api in self.apis
        }
        self._owns_api_state = True  # False once a reloaded gateway took the Responses store over
        self.echo_aliases = frozenset(
            m.name for m in config.models if (config.server.echo_alias if m.echo_alias is None else m.echo_alias)
        )
        # Request ids: a random per-process prefix + a counter (unique, and far cheaper than uuid4).
        self._rid_prefix = os.urandom(6).hex()
        self._rid_next = itertools.count(1).__next__
        self._stack = AsyncExitStack()  # what start() started, stopped in reverse by stop()

    def new_request_id(self) -> str:
        return f"{self._rid_prefix}{self._rid_next():020x}"

    def _on_probe(self, backend: Backend, changed: bool) -> None:
        self.metrics.backend_up.labels(backend.name).set(1 if backend.healthy else 0)
        if changed:
            self.log.warning("backend_health", backend=backend.name, healthy=backend.healthy)
            self.resilience.on_backend_health(backend)

    def _on_load(self, backend: Backend, load: Load) -> None:
        for d in self.router.deployments.on_backend(backend):
            self.metrics.set_load(d.name, load)
        if self.admission is not None:
            self.admission.on_load()  # a fresh reading may show room for waiting requests

    async def start(self) -> None:
        """Start each part once, in this order: backends (their HTTP sessions), health prober, load
        scraper, key store sync, phases (PHASE_FACTORIES order: tracing, limits, cache), deployment
        quotas. `stop()` stops exactly what started, in reverse, after the background settles ran.
        A part that fails to start stops the ones before it and the error propagates."""
        stack = self._stack
        try:
            if self.redis is not None:
                stack.push_async_callback(self.redis.aclose)
            stack.push_async_callback(self._close_apis)  # the Responses store (before Redis, which it may use)
            for backend in self.backends.values():
                await backend.start()
                stack.push_async_callback(backend.close)
            self.prober.start()
            stack.push_async_callback(self.prober.stop)
            await self.load_scraper.start()
            stack.push_async_callback(self.load_scraper.stop)
            await self.keystore.start()
            stack.push_async_callback(self.keystore.stop)
            for phase in self.phases:
                await _call(phase, "start")
                for name in ("stop", "close"):  # resources held by a phase (ledger, worker thread, exporter)
                    if callable(getattr(phase, name, None)):
                        stack.push_async_callback(getattr(phase, name))
            if self.quotas is not None:
                await self.quotas.start()
            if self.admission is not None:
                stack.push_async_callback(self.admission.close)
            stack.push_async_callback(self._drain_background)  # settles still running finish first
            if self.batch is not None:  # resumes the batches in progress; stopped first (then the drain)
                await self.batch.start()
                stack.push_async_callback(self.batch.stop)
        except BaseException:
            await stack.aclose()
            raise
        self.log.info(
            "gateway_started", models=self.router.aliases(), backends=list(self.backends), keys=len(self.keys)
        )

    async def stop(self) -> None:
        """Stop what start() started, once (a second call does nothing)."""
        await self._stack.aclose()

    def retire(self) -> None:
        """A reload swapped in a new gateway: start no new background work (batch lines); what
        runs finishes, then `stop()`."""
        if self.batch is not None:
            self.batch.runner.retire()

    def _count_tokens(self, text: str) -> int:
        """Token counter for the Messages API's estimates (count_tokens, message_start): tiktoken
        once the shared estimator loaded it, else 4 bytes per token."""
        counters = self.estimator.counters
        count = counters.get("cl100k_base") or next(iter(counters.values()), bytes_counter)
        return count(text)

    def adopt_state(self, old: Gateway) -> None:
        """After a config reload: stored Responses in memory carry over (same `[responses]` settings),
        so follow-ups with previous_response_id keep working; the old gateway no longer closes them."""
        if self.config.responses == old.config.responses and self.config.responses.store == "memory":
            mine, theirs = self.apis["responses"], old.apis["responses"]
            mine.store = theirs.store  # type: ignore[attr-defined]
            old._owns_api_state = False

    async def _close_apis(self) -> None:
        if not self._owns_api_state:
            return
        for adapter in self.apis.values():
            store = getattr(adapter, "store", None)
            if store is not None:
                await store.close()

    async def _drain_background(self) -> None:
        while self.background:
            await asyncio.gather(*self.background, return_exceptions=True)

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


async def _call(part: object, name: str) -> None:
    method = getattr(part, name, None)
    if callable(method):
        await method()


class GatewayRef:
    """What the aiohttp app holds: the current Gateway. A config reload builds a new Gateway and
    swaps `current`; requests already running keep the one they started with."""

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway
