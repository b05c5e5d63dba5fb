"""Shared fixtures: simulated engines on loopback, a gateway in front of them, the openai SDK.

Parallel-safe (pytest-xdist): every server binds port 0 (or a free port), files go under tmp_path,
Redis keys carry a random prefix per test, and each xdist worker uses its own Redis database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai.resources  # noqa: F401  (see below)
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gateway.config import Config, parse_config
from gateway.keys import hash_key
from gateway.server import RunningGateway, start_gateway
from loadtest.engine import EngineConfig, SimEngine, start_engine

# `import openai.resources` above: the SDK imports its ~650 pydantic models lazily, on a client's first
# `.chat`. That is ~0.6 s of CPU (seconds on a loaded machine) which would otherwise land inside the
# first timed request of every test process (xdist worker), e.g. a `< 1.5 s` hedging bound.


def _redis_db_per_worker() -> None:
    """$REDIS_URL's database becomes 1 + the worker's number (gw0 -> /1, gw1 -> /2 ...; 16 databases,
    so past 15 workers two share one, still apart by key prefix). Set here, at import in each worker,
    before any test module reads $REDIS_URL."""
    worker, url = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("REDIS_URL")
    if not worker or not url or not worker.startswith("gw"):
        return
    os.environ["REDIS_URL"] = urlunsplit(urlsplit(url)._replace(path=f"/{1 + int(worker[2:]) % 15}"))


_redis_db_per_worker()

KEY_ALL = "sk-test-all-models"  # team "research", every model
KEY_CHAT = "sk-test-chat-only"  # team "ops", only "chat"
BACKEND_KEY = "sk-backend-secret"


def gateway_config(engines: list[SimEngine], **server: Any) -> dict[str, Any]:
    """A config dict: one backend per engine, model "chat" on all of them, "embed" on the first."""
    return {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 0.2, **server},
        "backends": [
            {"name": f"e{i}", "kind": "vllm", "url": e.url, "api_key": BACKEND_KEY} for i, e in enumerate(engines)
        ],
        "models": [
            {
                "name": "chat",
                "deployments": [{"backend": f"e{i}", "model": "upstream-llama"} for i in range(len(engines))],
            },
            {"name": "embed", "deployments": [{"backend": "e0", "model": "upstream-embedder"}]},
        ],
        "teams": [{"name": "research"}, {"name": "ops"}],
        "keys": [
            {"name": "research-agents", "team": "research", "sha256": hash_key(KEY_ALL), "models": ["*"]},
            {"name": "ops-bot", "team": "ops", "sha256": hash_key(KEY_CHAT), "models": ["chat"]},
        ],
    }


def to_config(raw: dict[str, Any]) -> Config:
    import orjson

    return parse_config(orjson.dumps(raw).decode(), fmt="yaml", env={})  # JSON is YAML


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """Each test starts from structlog's defaults, whatever an earlier test on this worker configured:
    a configuration that caches loggers binds a gateway's logger, at its first use, to that earlier
    test's writer and level (a test that reads log lines then sees none)."""
    import structlog

    from gateway.logs import reset_logging

    if structlog.is_configured():
        reset_logging()


@pytest.fixture
async def engine_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[SimEngine] = []

    async def make(**kwargs: Any) -> SimEngine:
        kwargs.setdefault("seed", len(started))
        e = await start_engine(EngineConfig(**kwargs), host="127.0.0.1", port=0)
        started.append(e)
        return e

    yield make
    for e in started:
        await e.stop()


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningGateway] = []

    async def make(raw: dict[str, Any]) -> RunningGateway:
        gw = await start_gateway(to_config(raw), port=0)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


@pytest.fixture
async def engines(engine_factory: Callable[..., Any]) -> list[SimEngine]:
    return [await engine_factory(), await engine_factory()]


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any], engines: list[SimEngine]) -> RunningGateway:
    return await gateway_factory(gateway_config(engines))


def sdk(gw: RunningGateway, key: str = KEY_ALL, **kwargs: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0, **kwargs)


@pytest.fixture
def client(gateway: RunningGateway) -> AsyncOpenAI:
    return sdk(gateway)


@pytest.fixture
async def loopback_app() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Serve an aiohttp app on loopback: `base = await loopback_app(app)` ("http://127.0.0.1:PORT");
    stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def loopback_receiver(loopback_app: Callable[[web.Application], Any]) -> Callable[..., Any]:
    """A small HTTP server on loopback that hands POSTs to `handler` (a webhook target, an OTLP
    collector ...): `base = await loopback_receiver("/path", handler)`; stopped after the test."""

    async def start(path: str, handler: Callable[[web.Request], Any]) -> str:
        app = web.Application()
        app.router.add_post(path, handler)
        return await loopback_app(app)

    return start


async def _no_models(_: web.Request) -> web.Response:
    return web.json_response({"data": []})


@pytest.fixture
def fake_upstream(loopback_app: Callable[[web.Application], Any]) -> Callable[..., Any]:
    """A hand-written upstream engine on loopback: `url = await fake_upstream(handler)` (the base URL,
    ending in /v1) sends POSTs to chat completions, Messages and Responses to `handler`; GET
    /v1/models answers an empty list. For faults no real engine makes on demand."""

    async def start(handler: Callable[[web.Request], Any]) -> str:
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
            app.router.add_post(path, handler)
        app.router.add_get("/v1/models", _no_models)
        return await loopback_app(app) + "/v1"

    return start
