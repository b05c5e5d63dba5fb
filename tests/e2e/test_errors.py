"""Every refusal arrives in OpenAI's error shape, so the SDK raises its matching exception."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.conftest import KEY_ALL, KEY_CHAT, gateway_config, sdk

MESSAGES = [{"role": "user", "content": "hi"}]


def assert_openai_shape(body: dict, status: int) -> None:
    err = body["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]


async def test_missing_and_unknown_keys_are_401(gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        await sdk(gateway, "sk-not-a-key").chat.completions.create(model="chat", messages=MESSAGES)
    assert_openai_shape(e.value.body and {"error": e.value.body}, 401)
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway.url + "/chat/completions", json={"model": "chat", "messages": MESSAGES}) as r:
            assert r.status == 401
            assert_openai_shape(await r.json(), 401)
        async with s.get(gateway.url + "/models") as r:
            assert r.status == 401


async def test_x_api_key_header_works(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gateway.url + "/chat/completions",
            headers={"x-api-key": KEY_ALL},
            json={"model": "chat", "messages": MESSAGES, "max_tokens": 1},
        ) as r:
            assert r.status == 200


async def test_model_not_allowed_for_key_is_403(gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as e:
        await sdk(gateway, KEY_CHAT).embeddings.create(model="embed", input="x")
    assert e.value.code == "model_not_allowed"


async def test_unknown_model_is_404(client) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert e.value.code == "model_not_found"


async def test_malformed_json_and_missing_fields_are_400(gateway, client) -> None:
    auth = {"Authorization": f"Bearer {KEY_ALL}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        for body in (
            b"{not json",
            b"[1,2]",
            b"",
            b'{"messages": []}',
            b'{"model": "chat"}',
            b'{"model": "chat", "messages": "hi"}',
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        ):
            async with s.post(gateway.url + "/chat/completions", data=body, headers=auth) as r:
                assert r.status == 400, body
                assert_openai_shape(await r.json(), 400)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="chat", messages=[])


async def test_body_over_limit_is_413(gateway_factory, engines) -> None:
    gw = await gateway_factory(gateway_config(engines, max_body_bytes=2048))
    with pytest.raises(openai.APIStatusError) as e:
        await sdk(gw).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 5000}])
    assert e.value.status_code == 413 and e.value.code == "request_too_large"
    ok = await sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
    assert ok.choices  # the gateway keeps serving


async def test_unknown_path_is_json_404(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.base + "/v2/nothing") as r:
            assert r.status == 404
            assert_openai_shape(await r.json(), 404)


async def test_upstream_down_is_502_and_the_gateway_survives(gateway_factory, engine_factory) -> None:
    live = await engine_factory()
    raw = gateway_config([live])
    raw["backends"].append({"name": "dead", "kind": "vllm", "url": "http://127.0.0.1:9/v1"})
    raw["models"].append({"name": "ghost", "deployments": [{"backend": "dead", "model": "m"}]})
    gw = await gateway_factory(raw)
    with pytest.raises(openai.APIStatusError) as e:
        await sdk(gw).chat.completions.create(model="ghost", messages=MESSAGES)
    assert e.value.status_code in (502, 503)
    assert (await sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)).choices


async def test_upstream_client_errors_pass_through(client, engines) -> None:
    from loadtest.engine import Fault

    for e in engines:
        e.set_fault(Fault(kind="status", status=400, body="max_tokens is too large"))
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="chat", messages=MESSAGES)
    assert "max_tokens is too large" in str(err.value)


async def test_upstream_rejecting_gateway_credentials_is_502_not_401(client, engines) -> None:
    from loadtest.engine import Fault

    for e in engines:
        e.set_fault(Fault(kind="status", status=401))
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="chat", messages=MESSAGES)
    assert err.value.status_code == 502 and err.value.code == "upstream_misconfigured"


async def test_ready_is_503_while_a_model_has_no_reachable_deployment(gateway_factory, engine_factory) -> None:
    import asyncio

    live = await engine_factory()
    raw = gateway_config([live])
    raw["backends"].append({"name": "dead", "kind": "vllm", "url": "http://127.0.0.1:9/v1"})
    raw["models"].append({"name": "ghost", "deployments": [{"backend": "dead", "model": "m"}]})
    gw = await gateway_factory(raw)  # a backend down at startup does not stop the gateway
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            async with s.get(gw.base + "/health/ready") as r:
                status, body = r.status, await r.json()
            if body["models"].get("chat"):
                break
            await asyncio.sleep(0.05)
        async with s.get(gw.base + "/health/live") as r:
            assert r.status == 200
    assert status == 503 and body["models"] == {"chat": True, "embed": True, "ghost": False}


async def test_wrong_method_on_a_known_path_is_json_405(gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.url + "/chat/completions") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
