from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from loadtest.engine import EngineConfig, SimEngine, start_engine


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Awaitable[SimEngine]]]:
    """Start engines from EngineConfig keyword arguments; all stopped at teardown."""
    engines: list[SimEngine] = []

    async def make(**kw: Any) -> SimEngine:
        engine = await start_engine(EngineConfig(**kw))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.stop()


@pytest.fixture
async def engine(make_engine: Callable[..., Awaitable[SimEngine]]) -> SimEngine:
    return await make_engine(profile="vllm", seed=1)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[..., AsyncOpenAI]]:
    """sdk(engine) -> AsyncOpenAI without retries (tests count requests exactly); closed at teardown."""
    clients: list[AsyncOpenAI] = []

    def make(engine: SimEngine, **kw: Any) -> AsyncOpenAI:
        client = AsyncOpenAI(base_url=engine.url, api_key="x", max_retries=0, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
