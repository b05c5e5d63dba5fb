"""Admin API for keys (gateway/admin_keys.py, gateway/keystore.py): create, use, list, revoke; stored
hashed in SQLite (durable across restarts) or Redis (shared by several gateway processes)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path

import aiohttp
import openai
import pytest

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, gateway_config, sdk

ADMIN = "sk-admin-keys"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def config(engines, store: dict) -> dict:
    raw = gateway_config(engines, admin_key_sha256=hash_key(ADMIN))
    raw.update(store)
    return raw


async def admin(gw, method: str, path: str, json: object = None, headers: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, gw.base + path, json=json, headers=headers or AUTH) as r:
            return r.status, await r.json()


async def chat(gw, key: str, model: str = "chat") -> None:
    await sdk(gw, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)


async def test_create_use_list_revoke_with_sqlite_and_keys_survive_a_restart(
    engines, gateway_factory, tmp_path: Path
) -> None:
    db = tmp_path / "switchyard.db"
    raw = config(engines, {"keystore": {"path": str(db)}})
    gw = await gateway_factory(raw)
    status, created = await admin(gw, "POST", "/admin/keys", {"team": "ops", "name": "ci-bot", "models": ["chat"]})
    assert status == 201 and created["key"].startswith("sk-sy-") and created["team"] == "ops"
    key = created["key"]
    await chat(gw, key)
    with pytest.raises(openai.PermissionDeniedError):
        await chat(gw, key, model="embed")

    # Only the hash is stored; the listing shows neither the key nor the whole hash.
    dump = "\n".join(str(row) for row in sqlite3.connect(db).execute("SELECT * FROM api_keys"))
    assert key not in dump and hash_key(key) in dump
    status, listing = await admin(gw, "GET", "/admin/keys")
    assert status == 200
    names = {(k["name"], k["source"]) for k in listing["keys"]}
    assert {("ci-bot", "admin"), ("research-agents", "config")} <= names
    assert key not in str(listing) and hash_key(key) not in str(listing)

    # A restarted gateway (same file) still knows the key.
    gw2 = await gateway_factory(raw)
    await chat(gw2, key)

    status, revoked = await admin(gw, "DELETE", f"/admin/keys/{created['id']}")
    assert status == 200 and revoked["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        await chat(gw, key)  # at once on the gateway that revoked it
    await chat(gw, KEY_ALL)  # config keys keep working


async def test_bad_admin_key_calls_get_openai_style_errors(engines, gateway_factory, tmp_path: Path) -> None:
    gw = await gateway_factory(config(engines, {"keystore": {"path": str(tmp_path / "k.db")}}))
    status, body = await admin(
        gw, "POST", "/admin/keys", {"team": "ops"}, headers={"Authorization": f"Bearer {KEY_ALL}"}
    )
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await admin(gw, "POST", "/admin/keys", {"team": "nobody"})
    assert status == 400 and body["error"]["param"] == "team"
    status, body = await admin(gw, "POST", "/admin/keys", {"team": "ops", "models": ["no-such-model"]})
    assert status == 400 and body["error"]["param"] == "models"
    status, body = await admin(gw, "POST", "/admin/keys", {"team": "ops", "name": "research-agents"})
    assert status == 409 and body["error"]["code"] == "key_name_taken"
    assert (await admin(gw, "POST", "/admin/keys", {"team": "ops", "name": "twice"}))[0] == 201
    assert (await admin(gw, "POST", "/admin/keys", {"team": "ops", "name": "twice"}))[0] == 409
    status, body = await admin(gw, "DELETE", "/admin/keys/nope")
    assert status == 404 and body["error"]["code"] == "key_not_found"
    status, body = await admin(gw, "DELETE", "/admin/keys/research-agents")
    assert status == 409
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.base + "/admin/keys", data=b"{not json", headers=AUTH) as r:
            assert r.status == 400 and "error" in await r.json()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (make test / scripts/with-redis.sh)")
async def test_two_gateways_sharing_redis_see_each_others_keys(engines, gateway_factory) -> None:
    store = {
        "redis": {"url": os.environ["REDIS_URL"], "key_prefix": f"sy-test-{uuid.uuid4().hex[:8]}:"},
        "keystore": {"refresh_s": 0.1},
    }
    a = await gateway_factory(config(engines, store))
    b = await gateway_factory(config(engines, store))
    try:
        status, created = await admin(a, "POST", "/admin/keys", {"team": "research"})
        assert status == 201
        await asyncio.sleep(0.4)  # B re-reads the store every refresh_s
        await chat(b, created["key"])
        assert (await admin(b, "DELETE", f"/admin/keys/{created['name']}"))[0] == 200
        await asyncio.sleep(0.4)
        with pytest.raises(openai.AuthenticationError):
            await chat(a, created["key"])
    finally:
        redis = a.current.redis
        prefix = store["redis"]["key_prefix"]
        await redis.delete(prefix + "apikeys", prefix + "apikey_names")
