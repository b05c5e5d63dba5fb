"""Admin API: only the admin key gets in; deployments are listed with health and load."""

from __future__ import annotations

import aiohttp

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, gateway_config

ADMIN = "sk-admin-test"


async def test_admin_needs_the_admin_key(gateway_factory, engines) -> None:
    gw = await gateway_factory(gateway_config(engines, admin_key_sha256=hash_key(ADMIN)))
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": f"Bearer {KEY_ALL}"}):
            async with s.get(gw.base + "/admin/deployments", headers=headers) as r:
                assert r.status == 401 and "error" in await r.json()
        async with s.get(gw.base + "/admin/deployments", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
            models = {m["model"]: m for m in (await r.json())["models"]}
    chat = models["chat"]["deployments"]
    assert [d["backend"] for d in chat] == ["e0", "e1"]
    assert all({"healthy", "active", "max_concurrency"} <= set(d) for d in chat)


async def test_admin_is_disabled_without_a_configured_key(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.base + "/admin/deployments", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 403
