"""Gateway configs in front of real engines, and small readers for the tests in tests/real/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.keys import hash_key
from loadtest.real_engines import MODEL, RealEngine

KEY = "sk-real-engines"
ASK_FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def real_config(engines: list[RealEngine], policy: str = "round-robin", **sections: Any) -> dict[str, Any]:
    """One backend per engine (kind = the engine's), model alias "smollm2" on all of them."""
    server = {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 0.2, **sections.pop("server", {})}
    return {
        "server": server,
        "backends": [{"name": f"{e.kind}-{e.port}", "kind": e.kind, "url": e.url} for e in engines],
        "models": [
            {
                "name": MODEL,
                "policy": policy,
                "deployments": [{"backend": f"{e.kind}-{e.port}", "model": MODEL} for e in engines],
            }
        ],
        "teams": [{"name": "agents"}],
        "keys": [{"name": "agents", "team": "agents", "sha256": hash_key(KEY), "models": ["*"]}],
        "load_signals": {"interval_s": 0.1, "stale_after_s": 1.0},
        **sections,
    }


async def gateway_metric(base: str, name: str, **labels: str) -> float:
    """Sum of a gateway series (Prometheus text) whose labels include `labels`."""
    return (await gateway_metrics(base, name, **labels))[name]


async def gateway_metrics(base: str, *names: str, **labels: str) -> dict[str, float]:
    """Sums of several gateway series read from one scrape; a series without labels counts too."""
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals and all(f'{k}="{v}"' in line for k, v in labels.items()):
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0, every_s: float = 0.1) -> Any:
    """Poll `check` until it returns a truthy value; that value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s (last value: {value!r})")
        await asyncio.sleep(every_s)


async def engine_counters(engine: RealEngine) -> dict[str, float]:
    """The counters that say how much work an engine did, by a common name."""
    m = await engine.metrics()
    if engine.kind == "vllm":
        return {
            "prompt": m.get("vllm:prompt_tokens_total", 0.0),
            "generated": m.get("vllm:generation_tokens_total", 0.0),
            "running": m.get("vllm:num_requests_running", 0.0),
            "waiting": m.get("vllm:num_requests_waiting", 0.0),
            "cache_queries": m.get("vllm:prefix_cache_queries_total", 0.0),
            "cache_hits": m.get("vllm:prefix_cache_hits_total", 0.0),
        }
    cached = m.get("llamacpp:prompt_tokens_cached_total", 0.0)
    return {  # llama.cpp counts the prompt tokens it computed and those it took from a slot's cache apart
        "prompt": m.get("llamacpp:prompt_tokens_total", 0.0) + cached,
        "generated": m.get("llamacpp:tokens_predicted_total", 0.0),
        "decode_steps": m.get("llamacpp:n_decode_total", 0.0),
        "running": m.get("llamacpp:requests_processing", 0.0),
        "waiting": m.get("llamacpp:requests_deferred", 0.0),
        "cache_queries": m.get("llamacpp:prompt_tokens_total", 0.0) + cached,
        "cache_hits": cached,
    }
