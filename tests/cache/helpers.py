"""Shared bits of the cache tests: a one-engine gateway config with [cache], raw SDK calls."""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI

from tests.conftest import gateway_config

Q = [{"role": "user", "content": "What is the capital of France?"}]


def cache_config(engines: list[Any], cache: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    raw = gateway_config(engines, **server)
    raw["cache"] = cache if cache is not None else {}
    raw["resilience"] = {"max_attempts": 1}  # an upstream error reaches the client as is
    return raw


async def chat(client: AsyncOpenAI, headers: dict[str, str] | None = None, **kw: Any) -> tuple[str | None, Any]:
    """(x-switchyard-cache, parsed completion) of one non-streamed chat call."""
    kw.setdefault("model", "chat")
    kw.setdefault("messages", Q)
    kw.setdefault("temperature", 0)
    raw = await client.chat.completions.with_raw_response.create(extra_headers=headers or {}, **kw)
    return raw.headers.get("x-switchyard-cache"), raw.parse()


async def chat_stream(client: AsyncOpenAI, headers: dict[str, str] | None = None, **kw: Any) -> tuple[str | None, list[Any]]:
    kw.setdefault("model", "chat")
    kw.setdefault("messages", Q)
    kw.setdefault("temperature", 0)
    raw = await client.chat.completions.with_raw_response.create(extra_headers=headers or {}, stream=True, **kw)
    chunks = [c async for c in raw.parse()]
    return raw.headers.get("x-switchyard-cache"), chunks


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
