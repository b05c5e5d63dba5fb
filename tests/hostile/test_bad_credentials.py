"""A key that is not text (non-UTF-8 bytes, control characters) is a 401, on every endpoint that
takes a key (inference, models, admin): never a 500 and never a traceback."""

from __future__ import annotations

import orjson
import pytest

from gateway.keys import hash_key
from tests.conftest import KEY_ALL, gateway_config
from tests.hostile.raw import request, send

ADMIN = "sk-admin-hostile"
CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
ENDPOINTS = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/embeddings", orjson.dumps({"model": "embed", "input": "x"})),
    ("GET", "/v1/models", b""),
    ("GET", "/v1/models/chat", b""),
    ("GET", "/admin/deployments", b""),
    ("POST", "/admin/cache/purge", b"{}"),
]
BAD_VALUES = [b"Bearer sk-\xff\xfe-abc", b"Bearer \xc3\x28", b"Bearer sk-caf\xc3\xa9", b"Bearer sk-a\x80b"]


@pytest.fixture
async def gw(gateway_factory, engine_factory):
    return await gateway_factory(gateway_config([await engine_factory()], admin_key_sha256=hash_key(ADMIN)))


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_non_utf8_key_is_401(gw, header, method, path, body) -> None:
    for value in BAD_VALUES:
        if header == "x-api-key":
            value = value.removeprefix(b"Bearer ")
        resp = await send(gw.port, request(method, path, {header: value, "Content-Type": "application/json"}, body))
        assert resp.status == 401, (value, resp.body)
        err = resp.json()["error"]
        assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"


async def test_a_good_key_still_works_after_bad_ones(gw) -> None:
    await send(gw.port, request("GET", "/v1/models", {"Authorization": b"Bearer \xff"}))
    resp = await send(gw.port, request("GET", "/v1/models", {"Authorization": f"Bearer {KEY_ALL}"}))
    assert resp.status == 200
