"""Pass-through mode (issue #14): backends that serve the Responses / Messages APIs themselves get the
client's request as sent; a follow-up with previous_response_id goes back to the deployment holding
the earlier response (affinity by response id), or is rebuilt from the gateway's history when that
deployment is gone; a request only a backend's own API can take goes only there; kind `anthropic`
speaks to the backend with its own credentials."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tests.apis.conftest import Answer, ScriptedChat
from tests.conftest import BACKEND_KEY, KEY_ALL
from tests.e2e.conftest import api_config


def oai(gw: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0)


async def test_follow_ups_go_back_to_the_deployment_holding_the_response(
    scripted: ScriptedChat, native_factory: Any, gateway_factory: Any
) -> None:
    natives = [await native_factory(scripted.url) for _ in range(2)]
    raw = api_config([n.url + "/v1" for n in natives], [True, True])
    raw["models"][0]["policy"] = "round-robin"  # without the pin, turns would alternate
    gw = await gateway_factory(raw)
    c = oai(gw)
    first = await c.responses.with_raw_response.create(model="m", input="turn 0")
    held_by, prev = first.headers["x-switchyard-deployment"], first.parse().id
    for i in range(1, 6):
        r = await c.responses.with_raw_response.create(model="m", input=f"turn {i}", previous_response_id=prev)
        assert r.headers["x-switchyard-deployment"] == held_by
        prev = r.parse().id
    holder, other = natives[int(held_by[1])], natives[1 - int(held_by[1])]  # "b0/up-m" -> natives[0]
    assert (holder.requests, other.requests) == (6, 0)
    assert len(scripted.requests[-1]["messages"]) == 11  # the holder rebuilt all six turns itself
    got = await c.responses.retrieve(prev)  # the gateway knows the native id, for this key only
    assert got.id == prev and got.output_text


async def test_follow_up_rebuilt_when_its_deployment_is_gone(
    scripted: ScriptedChat, native_factory: Any, gateway_factory: Any
) -> None:
    native = await native_factory(scripted.url)
    raw = api_config([native.url + "/v1", scripted.url], [True, False])
    raw["models"][0]["policy"] = "round-robin"
    gw = await gateway_factory(raw)
    c = oai(gw)
    for _ in range(4):  # until one answer comes from the native backend
        r = await c.responses.with_raw_response.create(model="m", input="Weather in Paris?", instructions="sys")
        if r.headers["x-switchyard-deployment"] == "b0/up-m":
            break
    assert r.headers["x-switchyard-deployment"] == "b0/up-m"
    first = r.parse()
    await native.stop()  # the deployment holding it is gone
    await asyncio.sleep(0.5)  # (its health probe notices; a connection error would fall over too)
    scripted.push(Answer(text="Still sunny."))
    r2 = await c.responses.with_raw_response.create(model="m", input="And tomorrow?", previous_response_id=first.id)
    assert r2.headers["x-switchyard-deployment"] == "b1/up-m" and r2.parse().output_text == "Still sunny."
    assert scripted.requests[-1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And tomorrow?"},
    ]


async def test_untranslatable_requests_go_only_to_a_native_backend(
    scripted: ScriptedChat, native_factory: Any, gateway_factory: Any
) -> None:
    native = await native_factory(scripted.url)
    raw = api_config([scripted.url, native.url + "/v1"], [False, True])
    raw["models"][0]["policy"] = "round-robin"
    gw = await gateway_factory(raw)
    c = oai(gw)
    for _ in range(3):  # a built-in tool: the translation refuses it, so only b1's own API may take it
        with pytest.raises(openai.BadRequestError, match="web_search") as e:
            await c.responses.create(model="m", input="news?", tools=[{"type": "web_search"}])
        assert e.value.response.headers["x-switchyard-deployment"] == "b1/up-m"  # the backend's own answer
    assert native.requests == 3 and native.last_request["tools"] == [{"type": "web_search"}]
    only_chat = await gateway_factory(api_config([scripted.url]))
    with pytest.raises(openai.BadRequestError, match="web_search") as e:  # refused before any upstream
        await oai(only_chat).responses.create(model="m", input="news?", tools=[{"type": "web_search"}])
    assert "x-switchyard-deployment" not in e.value.response.headers


async def test_anthropic_kind_uses_its_own_credentials(
    scripted: ScriptedChat, native_factory: Any, gateway_factory: Any
) -> None:
    native = await native_factory(scripted.url, api_key=BACKEND_KEY)  # accepts only the backend's key
    raw = api_config([native.url + "/v1"])
    raw["backends"][0] |= {"kind": "anthropic", "native_apis": None}  # kind default: messages natively
    gw = await gateway_factory(raw)
    client = AsyncAnthropic(base_url=gw.base, api_key=KEY_ALL, max_retries=0)
    m = await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "Hello from the scripted engine." and native.requests == 1
    h = native.last_headers
    assert h["x-api-key"] == BACKEND_KEY and "Authorization" not in h  # the backend's key, never the client's
    assert h["anthropic-version"] == client.default_headers["anthropic-version"]  # the client's version wins
    async with httpx.AsyncClient() as http:  # a client that names no version gets the default one
        r = await http.post(
            f"{gw.base}/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": KEY_ALL},
        )
    assert r.status_code == 200 and native.last_headers["anthropic-version"] == "2023-06-01"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="other", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
