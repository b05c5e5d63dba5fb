"""Shared bits of the cache tests: a one-engine gateway config with [cache], raw SDK calls."""

from __future__ import annotations

import asyncio
from typing import Any

from openai import AsyncOpenAI

from tests.conftest import gateway_config

Q = [{"role": "user", "content": "What is the capital of France?"}]


def cache_config(engines: list[Any], cache: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    raw = gateway_config(engines, **server)
    raw["cache"] = cache if cache is not None else {}
    raw["resilience"] = {"max_attempts": 1}  # an upstream error reaches the client as is
    return raw


async def settles() -> None:
    """Wait for the in-process gateways' settles (they run after the answer was sent, so a cache
    store lands a moment after the client has its answer)."""
    await asyncio.sleep(0.01)  # the handler spawns its settle right after the last byte went out
    for _ in range(100):
        pending = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "_settle"]
        if not pending:
            return
        await asyncio.gather(*pending, return_exceptions=True)


async def chat(client: AsyncOpenAI, headers: dict[str, str] | None = None, **kw: Any) -> tuple[str | None, Any]:
    """(x-switchyard-cache, parsed completion) of one non-streamed chat call."""
    kw.setdefault("model", "chat")
    kw.setdefault("messages", Q)
    kw.setdefault("temperature", 0)
    raw = await client.chat.completions.with_raw_response.create(extra_headers=headers or {}, **kw)
    await settles()
    return raw.headers.get("x-switchyard-cache"), raw.parse()


async def chat_stream(
    client: AsyncOpenAI, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[str | None, list[Any]]:
    kw.setdefault("model", "chat")
    kw.setdefault("messages", Q)
    kw.setdefault("temperature", 0)
    raw = await client.chat.completions.with_raw_response.create(extra_headers=headers or {}, stream=True, **kw)
    chunks = [c async for c in raw.parse()]
    await settles()
    return raw.headers.get("x-switchyard-cache"), chunks


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
