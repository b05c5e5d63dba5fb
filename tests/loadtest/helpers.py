"""Shared helpers for the simulated-engine tests."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

EVENT_RE = re.compile(rb"data: ([^\n]*)\n\n")


def chat_body(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def split_events(raw: bytes) -> list[bytes]:
    """Payloads of `data: ...\\n\\n` events; asserts the body is exactly those events."""
    events = EVENT_RE.findall(raw)
    assert b"".join(b"data: " + e + b"\n\n" for e in events) == raw, raw[:500]
    return events


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
        return r.status, dict(r.headers), await r.read()


async def stream_times(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, list[float]]:
    """(TTFT, arrival times of content events) of one streamed request, from send time."""
    t0 = time.perf_counter()
    times: list[float] = []
    async with session.post(url, json={**body, "stream": True}) as r:
        assert r.status == 200
        buf = b""
        async for chunk in r.content.iter_any():
            now = time.perf_counter()
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if b'"content":"' in event and b'"content":""' not in event:
                    times.append(now)
    return times[0] - t0, times


def mean_gap(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1)


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
