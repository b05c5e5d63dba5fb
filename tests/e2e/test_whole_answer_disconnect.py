"""A client that gives up on a non-streamed request (its SDK's timeout) frees the engine at once:
the gateway closes the upstream request, it does not wait for the whole answer."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import gateway_config, sdk


async def test_sdk_timeout_on_a_whole_answer_closes_the_upstream(fake_upstream, gateway_factory) -> None:
    closed: list[float] = []

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        start = time.monotonic()
        while time.monotonic() - start < 20:
            if request.transport is None or request.transport.is_closing():
                closed.append(time.monotonic())
                break
            await asyncio.sleep(0.02)
        return web.json_response({"choices": []})

    url = await fake_upstream(slow)
    raw = gateway_config([])
    raw["backends"] = [{"name": "e0", "kind": "vllm", "url": url}]
    raw["models"] = [{"name": "chat", "deployments": [{"backend": "e0", "model": "m"}]}]
    gw = await gateway_factory(raw)
    client = sdk(gw).with_options(timeout=httpx.Timeout(1.0))
    gave_up = 0.0
    with pytest.raises(openai.APITimeoutError):
        try:
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        finally:
            gave_up = time.monotonic()
    deadline = time.monotonic() + 3
    while not closed and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert closed, "the upstream request was still open 3 s after the client gave up"
    assert closed[0] - gave_up < 1.5
