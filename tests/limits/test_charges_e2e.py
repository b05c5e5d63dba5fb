"""What a request is charged when the upstream reports no usage, and what a hard budget lets an
answer spend.

- reached the upstream, cancelled before its first byte: the prompt (the upstream read it), and a
  non-streamed request cancelled while the upstream worked: its whole reservation;
- an upstream 4xx (it refused the request, generated nothing): nothing;
- a hard budget caps every answer at its reservation: `max_tokens` = the reserved allowance goes
  upstream when the client set none (or more), streamed or not;
- `cut_streams` counts tokens (the deltas' text), not events, and the ledger records the counted
  tokens when no usage comes;
- one request's reservation is capped (the context window, else `limits.max_reserve_tokens`), and a
  cancelled stream is refunded what it did not use: no lockout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from gateway.limits import estimate
from tests.conftest import KEY_CHAT, sdk
from tests.limits.helpers import limits_config, settled, usage

MSG = [{"role": "user", "content": "Hello there"}]
BODY = {"model": "chat", "messages": MSG}
INPUT = {"chat": {"input_per_mtok": 1000, "output_per_mtok": 0}}  # $0.001 per prompt token
OUTPUT = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token


def prompt_estimate(gw: Any) -> int:
    return estimate.prompt_tokens("chat", {"messages": MSG}, gw.gateway.estimator.counter("chat"))


async def post_and_leave(gw: Any, body: dict[str, Any], after_s: float) -> None:
    """Send a request and hang up after `after_s` (plus the gateway's half-close grace)."""
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.TimeoutException):
            async with c.stream(
                "POST",
                f"{gw.url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {KEY_CHAT}"},
                timeout=after_s,
            ) as r:
                async for _ in r.aiter_bytes():
                    pass
    await asyncio.sleep(1.0)  # the FIN is taken for a disconnect after server.half_close_grace_s
    await settled(gw)


def budget(tmp_path: Any, hard_usd: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "team", "name": "ops", "hard_usd": hard_usd}],
        **extra,
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_cancelled_after_reaching_the_upstream_is_charged(
    stream: bool, engine_factory: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    engine = await engine_factory(ttft_s=2.0)
    gw = await gateway_factory(limits_config([engine], prices=INPUT, budgets=budget(tmp_path)))
    await post_and_leave(gw, {**BODY, "max_tokens": 50, "stream": stream}, after_s=0.3)
    assert engine.stats.requests_total == 1  # it reached the upstream, which read the prompt
    report = (await usage(gw, team="ops")).json()
    # the prompt either way; a non-streamed answer may have been generated whole: its reservation
    expected = prompt_estimate(gw) * 0.001
    assert report["spend_usd"] == pytest.approx(expected)
    assert report["reserved_usd"] == 0
    assert report["by_model"]["chat"]["completion_tokens"] == (0 if stream else 50)


async def test_cancelled_before_reaching_the_upstream_is_not_charged(
    engine_factory: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    engine = await engine_factory(ttft_s=2.0)
    raw = limits_config([engine], prices=INPUT, budgets=budget(tmp_path))
    raw["backends"][0]["max_concurrency"] = 1
    gw = await gateway_factory(raw)
    first = asyncio.create_task(sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=5))
    await asyncio.sleep(0.2)
    await post_and_leave(gw, {**BODY, "max_tokens": 50}, after_s=0.3)  # waits in the queue, then leaves
    await first
    await settled(gw)
    assert engine.stats.requests_total == 1, engine.stats.requests_by_path
    report = (await usage(gw, team="ops")).json()
    assert report["by_model"]["chat"]["requests"] == 1  # only the first one


async def test_an_upstream_4xx_is_not_charged(engine_factory: Any, gateway_factory: Any, tmp_path: Any) -> None:
    engine = await engine_factory(max_model_len=64)  # the engine refuses prompt + max_tokens > 64 with a 400
    gw = await gateway_factory(limits_config([engine], prices=OUTPUT, budgets=budget(tmp_path)))
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError):
            await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=500, stream=stream)
    await settled(gw)
    assert engine.stats.requests_total == 2
    report = (await usage(gw, team="ops")).json()
    assert report["spend_usd"] == 0 and report["reserved_usd"] == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_a_hard_budget_caps_answers_without_max_tokens(
    stream: bool, engine_factory: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    engine = await engine_factory(output_tokens=40)
    gw = await gateway_factory(
        limits_config(
            [engine],
            prices=OUTPUT,
            limits={"default_max_tokens": 10, "max_reserve_tokens": 1000},
            budgets=budget(tmp_path),
        )
    )
    client = sdk(gw, KEY_CHAT)
    if stream:
        pieces = []
        async for chunk in await client.chat.completions.create(model="chat", messages=MSG, stream=True):
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        assert len(pieces) == 10
    else:
        answer = await client.chat.completions.create(model="chat", messages=MSG)
        assert answer.usage.completion_tokens == 10 and answer.choices[0].finish_reason == "length"
    assert engine.stats.last_request_body["max_tokens"] == 10  # the reservation went upstream
    # a client's own larger max_tokens is capped the same way; a smaller one is left as it is
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=10**9)
    assert engine.stats.last_request_body["max_tokens"] == 1000  # limits.max_reserve_tokens
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    assert engine.stats.last_request_body["max_tokens"] == 3
    await settled(gw)
    report = (await usage(gw, team="ops")).json()
    assert report["by_model"]["chat"]["completion_tokens"] <= 10 + 40 + 3


@pytest.fixture
def wordy_upstream(fake_upstream: Callable[..., Any]) -> Callable[..., Any]:
    """An upstream that ignores max_tokens, sends several tokens per event and reports no usage."""

    async def start(events: int = 30, words: int = 5) -> str:
        async def chat(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for _ in range(events):
                delta = {"content": " ".join(["token"] * words) + " "}
                chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                await asyncio.sleep(0.01)
            await resp.write(b"data: [DONE]\n\n")
            return resp

        return await fake_upstream(chat)

    return start


class Upstream:
    def __init__(self, url: str) -> None:
        self.url = url


async def test_cut_streams_counts_tokens_not_events(wordy_upstream: Any, gateway_factory: Any, tmp_path: Any) -> None:
    url = await wordy_upstream(events=30, words=5)
    raw = limits_config(
        [Upstream(url)],
        prices=OUTPUT,
        limits={"default_max_tokens": 20},
        budgets=budget(tmp_path, cut_streams=True),
    )
    raw["backends"][0]["stream_usage"] = False
    gw = await gateway_factory(raw)
    stream = await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as exc:
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert "budget" in str(exc.value)
    sent = len(text.split())
    assert 0 < sent <= 20  # 4 events of 5 tokens, not 20 events (100 tokens)
    await settled(gw)
    report = (await usage(gw, team="ops")).json()
    counted = report["by_model"]["chat"]["completion_tokens"]
    assert sent <= counted <= 20  # what was really sent, counted; never more than the reservation
    assert report["spend_usd"] == pytest.approx(counted * 0.001)


async def test_a_stream_without_usage_is_charged_its_counted_tokens(
    wordy_upstream: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    url = await wordy_upstream(events=6, words=5)
    raw = limits_config([Upstream(url)], prices=OUTPUT, budgets=budget(tmp_path))
    raw["backends"][0]["stream_usage"] = False
    gw = await gateway_factory(raw)
    stream = await sdk(gw, KEY_CHAT).chat.completions.create(model="chat", messages=MSG, max_tokens=1000, stream=True)
    async for _ in stream:
        pass
    await settled(gw)
    report = (await usage(gw, team="ops")).json()
    assert 30 <= report["by_model"]["chat"]["completion_tokens"] <= 40  # counted, not the 1000 reserved


async def test_a_huge_max_tokens_reserves_a_bounded_amount_and_a_cancel_refunds_it(
    engine_factory: Any, gateway_factory: Any
) -> None:
    engine = await engine_factory(itl_s=0.05, output_tokens=1000)
    gw = await gateway_factory(
        limits_config([engine], limits={"rules": [{"scope": "key", "name": "*", "tokens_per_minute": 100000}]})
    )
    remaining: list[int] = []

    async def stream() -> None:
        async with httpx.AsyncClient() as c:
            async with c.stream(
                "POST",
                f"{gw.url}/chat/completions",
                json={**BODY, "max_tokens": 10**12, "stream": True},
                headers={"Authorization": f"Bearer {KEY_CHAT}"},
            ) as r:
                remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
                async for _ in r.aiter_bytes():
                    pass

    task = asyncio.create_task(stream())
    await asyncio.sleep(0.5)
    task.cancel()  # the client leaves after half a second
    await asyncio.gather(task, return_exceptions=True)
    assert remaining[0] >= 100000 - 32768 - 50  # reserved at most limits.max_reserve_tokens
    await asyncio.sleep(1.0)
    await settled(gw)
    started = time.monotonic()
    raw = await sdk(gw, KEY_CHAT).chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=5)
    assert time.monotonic() - started < 2.0
    # the cancelled stream was charged its prompt and the tokens it sent, not its reservation
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 100000 - 1000


async def test_a_huge_max_tokens_takes_a_bounded_deployment_quota(engine_factory: Any, gateway_factory: Any) -> None:
    engine = await engine_factory(profile="remote")
    raw = limits_config([engine])  # no [limits]: the deployment quota makes its own estimate
    raw["backends"][0]["kind"] = "openai-compatible"
    raw["backends"][0]["limits"] = {"tokens_per_minute": 100000}
    gw = await gateway_factory(raw)
    client = sdk(gw, KEY_CHAT)
    with pytest.raises(openai.BadRequestError):  # the engine refuses it (no usage): the estimate stays taken
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=10**12)
    started = time.monotonic()
    await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)  # not locked out
    assert time.monotonic() - started < 2.0


async def test_a_hard_budget_caps_responses_and_messages_requests(
    engine_factory: Any, gateway_factory: Any, tmp_path: Any
) -> None:
    """Requests of the other APIs run as chat requests: translated, the chat body sent upstream is
    capped; passed through (a backend serving the API itself), the API's own field is."""
    from anthropic import AsyncAnthropic

    from loadtest.native_apis import start_native_apis

    engine = await engine_factory(output_tokens=40)
    native = await start_native_apis(engine.url, upstream_model="upstream-llama")
    try:
        raw = limits_config(
            [engine, engine],
            prices=OUTPUT,
            limits={"default_max_tokens": 10, "max_reserve_tokens": 1000},
            budgets=budget(tmp_path),
        )
        raw["backends"][1].update(url=native.url + "/v1", kind="openai-compatible", native_apis=["responses"])
        raw["models"][0]["deployments"] = [{"backend": "e0", "model": "upstream-llama"}]
        raw["models"].append({"name": "native", "deployments": [{"backend": "e1", "model": "upstream-llama"}]})
        raw["prices"]["native"] = OUTPUT["chat"]
        raw["budgets"]["rules"][0]["name"] = "*"  # every team
        gw = await gateway_factory(raw)
        openai_client = sdk(gw)
        r = await openai_client.responses.create(model="chat", input="hello")  # translated, no max_output_tokens
        assert engine.stats.last_request_body["max_tokens"] == 10 and r.usage.output_tokens == 10
        m = await AsyncAnthropic(base_url=gw.base, api_key=KEY_CHAT, max_retries=0).messages.create(
            model="chat", max_tokens=4000, messages=[{"role": "user", "content": "hi"}]
        )
        assert engine.stats.last_request_body["max_tokens"] == 1000 and m.usage.output_tokens == 40
        r = await openai_client.responses.create(model="native", input="hello")  # passed through
        assert r.usage.output_tokens == 10
    finally:
        await native.stop()
