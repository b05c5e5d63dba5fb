"""Shared fixtures: simulated engines on loopback, a gateway in front of them, the openai SDK."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gateway.config import Config, parse_config
from gateway.keys import hash_key
from gateway.server import RunningGateway, start_gateway
from loadtest.engine import EngineConfig, SimEngine, start_engine

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
            {"name": "chat", "deployments": [{"backend": f"e{i}", "model": "upstream-llama"} for i in range(len(engines))]},
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
async def loopback_receiver() -> AsyncIterator[Callable[..., Any]]:
    """Start a small HTTP server on loopback that hands POSTs to `handler` (a webhook target, an
    OTLP collector ...): `base = await loopback_receiver("/path", handler)`; stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(path: str, handler: Callable[[web.Request], Any]) -> str:
        app = web.Application()
        app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()
