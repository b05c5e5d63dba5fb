"""Per-deployment quotas (backends[].limits): a remote API's own RPM/TPM, enforced by the gateway so
the upstream never answers 429: traffic beyond a deployment's quota moves to the others, 429 with
Retry-After when none has quota left, one quota across gateways sharing Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

from gateway.config import ConfigError
from tests.conftest import gateway_config, sdk, to_config
from tests.limits.conftest import REDIS_URL
from tests.limits.helpers import ADMIN_KEY, limits_config

MSG = [{"role": "user", "content": "Hello there"}]


async def remote_engines(engine_factory: Any, *limits: int) -> list[Any]:
    """Simulated remote APIs (OpenAI flavour), each with its own requests-per-minute quota."""
    return [await engine_factory(profile="remote", rpm_limit=rpm) for rpm in limits]


def quota_config(
    engines: list[Any], quotas: list[dict | None], *, policy: str = "round-robin", **extra: Any
) -> dict[str, Any]:
    raw = limits_config(engines, **extra)  # admin key set; [limits]/[redis] only when given
    for backend, quota in zip(raw["backends"], quotas):
        backend["kind"] = "openai-compatible"
        if quota is not None:
            backend["limits"] = quota
    raw["models"][0]["policy"] = policy
    return raw


def skips(gw: Any, deployment: str) -> float:
    for line in gw.gateway.metrics.render().decode().splitlines():
        if line.startswith(f'switchyard_deployment_quota_skips_total{{deployment="{deployment}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_traffic_beyond_a_deployments_quota_goes_to_the_other_with_zero_errors(
    engine_factory: Any, gateway_factory: Any
) -> None:
    limited, free = await remote_engines(engine_factory, 3, 0)
    gw = await gateway_factory(quota_config([limited, free], [{"requests_per_minute": 3}, None]))
    client = sdk(gw)
    served = []
    for _ in range(12):  # round-robin would send 6 to each; the quota allows 3 on e0
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=5)
        assert raw.status_code == 200
        served.append(raw.headers["x-switchyard-deployment"])
    assert served.count("e0/upstream-llama") == 3
    assert served.count("e1/upstream-llama") == 9
    # the upstream itself never saw more than its quota, so it never had to answer 429
    assert limited.stats.requests_total == 3 and limited.stats.rate_limited == 0
    assert free.stats.requests_total == 9
    assert skips(gw, "e0/upstream-llama") >= 1


async def test_every_deployment_over_quota_gives_rate_limit_error_with_retry_after(
    engine_factory: Any, gateway_factory: Any
) -> None:
    a, b = await remote_engines(engine_factory, 2, 2)
    gw = await gateway_factory(quota_config([a, b], [{"requests_per_minute": 2}, {"requests_per_minute": 2}]))
    client = sdk(gw)
    for _ in range(4):
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)
    assert time.monotonic() - started < 1.0  # answered at once, no waiting on the quota
    err = exc.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    # 2 per minute refill one request every 30 s: the soonest deployment has quota again in ~30 s
    assert 25 <= int(err.response.headers["retry-after"]) <= 30
    assert "every deployment of model `chat`" in err.message
    assert a.stats.requests_total == 2 and b.stats.requests_total == 2
    assert a.stats.rate_limited == 0 and b.stats.rate_limited == 0
    metrics = gw.gateway.metrics.render().decode()
    assert 'switchyard_rate_limited_total{scope="deployment",team="research"} 1.0' in metrics
    async with httpx.AsyncClient() as http:  # the admin view shows how long each waits for quota
        r = await http.get(f"{gw.base}/admin/breakers", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    waits = {row["deployment"]: row["quota_wait_s"] for row in r.json()["deployments"]}
    assert 20 < waits["e0/upstream-llama"] <= 30 and 20 < waits["e1/upstream-llama"] <= 30


async def test_fallback_alias_serves_when_the_alias_deployments_are_over_quota(
    engine_factory: Any, gateway_factory: Any
) -> None:
    limited, spare = await remote_engines(engine_factory, 1, 0)
    raw = quota_config([limited, spare], [{"requests_per_minute": 1}, None])
    raw["models"] = [
        {"name": "chat", "deployments": [{"backend": "e0", "model": "upstream-llama"}], "fallbacks": ["spare"]},
        {"name": "spare", "deployments": [{"backend": "e1", "model": "upstream-llama"}]},
    ]
    gw = await gateway_factory(raw)
    client = sdk(gw)
    answered_by = []
    for _ in range(3):
        r = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=5)
        answered_by.append(r.headers["x-switchyard-model"])
    assert answered_by == ["chat", "spare", "spare"]
    assert limited.stats.requests_total == 1 and limited.stats.rate_limited == 0


async def test_tokens_per_minute_charged_when_sent_and_corrected_to_real_usage(
    engine_factory: Any, gateway_factory: Any
) -> None:
    slow = await engine_factory(profile="remote", ttft_s=0.6, output_tokens=10)
    gw = await gateway_factory(quota_config([slow], [{"tokens_per_minute": 1000}], limits={"rules": []}))
    assert gw.gateway.limits is not None  # the estimate comes from the limits phase's reservation
    client = sdk(gw)
    # in flight: its estimate (prompt + max_tokens 600) is held, so a second one does not fit: it
    # waits in the admission queue until the first settles to the ~20 tokens really used
    first = asyncio.create_task(client.chat.completions.create(model="chat", messages=MSG, max_tokens=600))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG, max_tokens=600)
    waited = time.monotonic() - t0
    reply = await first
    assert reply.usage is not None and reply.usage.completion_tokens <= 10
    assert raw.parse().choices and waited >= 0.2  # served once the first one's tokens came back
    assert int(raw.headers["x-switchyard-queue-ms"]) >= 200
    assert slow.stats.requests_total == 2 and slow.stats.rate_limited == 0


async def test_quota_without_a_limits_section_estimates_tokens_itself(
    engine_factory: Any, gateway_factory: Any
) -> None:
    slow = await engine_factory(profile="remote", ttft_s=0.6, output_tokens=10)
    gw = await gateway_factory(quota_config([slow], [{"tokens_per_minute": 5000}]))
    assert gw.gateway.limits is None  # no [limits], [budgets] or [prices]: no limits phase
    client = sdk(gw)
    # no max_tokens: prompt + the default 4096-token output allowance is held while it runs, so
    # the second one waits (admission queue) until the first settles to what it used
    first = asyncio.create_task(client.chat.completions.create(model="chat", messages=MSG))
    await asyncio.sleep(0.3)
    second = await client.chat.completions.create(model="chat", messages=MSG, max_tokens=1000)
    assert first.done() and second.choices
    assert slow.stats.requests_total == 2 and slow.stats.rate_limited == 0


async def test_two_gateways_on_one_redis_share_each_deployments_quota(
    engine_factory: Any, gateway_factory: Any, prefix: str
) -> None:
    a, b = await remote_engines(engine_factory, 4, 4)
    # 4 at once, refilling 1 per minute: a run of a few seconds gets exactly 4 per deployment
    quota = {"requests_per_minute": 1, "burst": 4}
    raw = quota_config(
        [a, b], [quota, quota], policy="least-active", redis={"url": REDIS_URL, "key_prefix": prefix, "timeout_s": 3}
    )
    g1, g2 = await gateway_factory(raw), await gateway_factory(raw)
    assert g1.gateway.redis is not g2.gateway.redis
    http = httpx.AsyncClient(timeout=30)
    clients = [sdk(g1, http_client=http), sdk(g2, http_client=http)]

    async def one(i: int) -> str:
        try:
            await clients[i % 2].chat.completions.create(model="chat", messages=MSG, max_tokens=5)
            return "ok"
        except openai.RateLimitError:
            return "429"

    results = [await one(0), await one(1)]  # one through each gateway first, then 18 at once
    results += await asyncio.gather(*(one(i) for i in range(2, 20)))
    assert results[:2] == ["ok", "ok"]
    assert results.count("ok") == 8, results  # 4 per deployment, whichever gateway sent them
    assert a.stats.requests_total == 4 and b.stats.requests_total == 4
    assert a.stats.rate_limited == 0 and b.stats.rate_limited == 0
    await http.aclose()


async def test_dead_redis_follows_the_fail_policy_without_hanging(
    engine_factory: Any, gateway_factory: Any, private_redis: Any
) -> None:
    (e,) = await remote_engines(engine_factory, 0)
    raw = quota_config(
        [e],
        [{"requests_per_minute": 100}],
        limits={"fail_policy": "closed"},
        redis={"url": private_redis.url, "timeout_s": 0.2},
    )
    gw = await gateway_factory(raw)
    client = sdk(gw)
    assert (await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)).choices
    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as exc:
        await client.chat.completions.create(model="chat", messages=MSG, max_tokens=5)
    assert exc.value.status_code == 503 and exc.value.code == "limits_unavailable"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "quota, message",
    [
        ({}, "set at least one of requests_per_minute, tokens_per_minute"),
        ({"requests_per_minute": 0}, "greater than 0"),
        ({"requests_per_minute": 10, "concurrent": 2}, "concurrent"),
        ({"tokens_per_minute": 1000, "burst": -1}, "greater than 0"),
    ],
)
def test_backend_limits_are_validated(quota: dict, message: str) -> None:
    raw = gateway_config([])
    raw["backends"] = [{"name": "api", "kind": "openai", "url": "https://api.example.com/v1", "limits": quota}]
    raw["models"] = [{"name": "chat", "deployments": [{"backend": "api", "model": "gpt-4o-mini"}]}]
    with pytest.raises(ConfigError) as exc:
        to_config(raw)
    text = str(exc.value) + repr(getattr(exc.value, "errors", ""))
    assert "limits" in text and message in text
