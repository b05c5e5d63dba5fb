"""Config builders and waits shared by the limits end-to-end tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gateway.keys import hash_key
from gateway.server import RunningGateway
from tests.conftest import gateway_config

ADMIN_KEY = "sk-test-admin"


def limits_config(
    engines: list[Any],
    *,
    limits: dict | None = None,
    budgets: dict | None = None,
    prices: dict | None = None,
    redis: dict | None = None,
    **server: Any,
) -> dict[str, Any]:
    raw = gateway_config(engines, admin_key_sha256=hash_key(ADMIN_KEY), **server)
    if limits is not None:
        raw["limits"] = limits
    if budgets is not None:
        raw["budgets"] = budgets
    if prices is not None:
        raw["prices"] = prices
    if redis is not None:
        raw["redis"] = redis
    return raw


async def settled(gw: RunningGateway) -> None:
    """Wait for background settles (they run after the response) to finish."""
    for _ in range(200):
        if not gw.gateway.background:
            return
        await asyncio.gather(*list(gw.gateway.background), return_exceptions=True)
    raise AssertionError("settles never finished")


async def usage(gw: RunningGateway, api_key: str = ADMIN_KEY, **params: str) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.get(
            f"{gw.base}/v1/switchyard/usage", params=params, headers={"Authorization": f"Bearer {api_key}"}
        )
