"""/metrics per profile."""

from __future__ import annotations

import re

import pytest

from tests.loadtest.helpers import chat_body, post

EXPECTED = {
    "vllm": [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
    ],
    "sglang": ["sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "sglang:cache_hit_rate"],
    "tgi": ["tgi_queue_size", "tgi_batch_current_size"],
    "llamacpp": [
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:kv_cache_usage_ratio",
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
    ],
}


def families(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


async def scrape(session, engine) -> tuple[int, str]:
    async with session.get(engine.base + "/metrics") as r:
        return r.status, await r.text()


@pytest.mark.parametrize("profile", sorted(EXPECTED))
async def test_metric_names_per_profile(make_engine, session, profile):
    eng = await make_engine(profile=profile, served_model_names=["llama"])
    await post(session, eng.url + "/chat/completions", chat_body(model="llama"))
    status, text = await scrape(session, eng)
    assert status == 200
    fams = families(text)
    for name in EXPECTED[profile]:
        assert name in fams, name
    prefix = {"vllm": "vllm:", "sglang": "sglang:", "tgi": "tgi_", "llamacpp": "llamacpp:"}[profile]
    assert all(name.startswith(prefix) for name in fams)


async def test_vllm_metric_values(make_engine, session):
    eng = await make_engine(served_model_names=["llama"])
    for _ in range(3):
        await post(session, eng.url + "/chat/completions", chat_body("metrics please", model="llama"))
    await post(session, eng.url + "/chat/completions", chat_body("metrics please", model="llama", max_tokens=2))
    status, text = await scrape(session, eng)
    fams = families(text)
    assert fams["vllm:num_requests_running"] == "gauge"
    assert fams["vllm:prompt_tokens_total"] == "counter"
    assert fams["vllm:time_to_first_token_seconds"] == "histogram"
    lab = {"model_name": "llama", "engine": "0"}
    assert sample(text, "vllm:prompt_tokens_total", **lab) == eng.stats.prompt_tokens > 0
    assert sample(text, "vllm:generation_tokens_total", **lab) == 3 * 16 + 2
    assert sample(text, "vllm:request_success_total", finished_reason="stop", **lab) == 3
    assert sample(text, "vllm:request_success_total", finished_reason="length", **lab) == 1
    assert sample(text, "vllm:time_to_first_token_seconds_count", **lab) == 4
    assert sample(text, "vllm:e2e_request_latency_seconds_bucket", le="+Inf", **lab) == 4
    assert sample(text, "vllm:num_requests_running", **lab) == 0
    assert "vllm:gpu_cache_usage_perc" not in fams


async def test_legacy_kv_metric(make_engine, session):
    eng = await make_engine(legacy_kv_metric=True)
    _, text = await scrape(session, eng)
    fams = families(text)
    assert "vllm:gpu_cache_usage_perc" in fams and "vllm:kv_cache_usage_perc" not in fams


@pytest.mark.parametrize("profile", ["plain", "remote"])
async def test_no_metrics_for_plain_and_remote(make_engine, session, profile):
    eng = await make_engine(profile=profile)
    status, _ = await scrape(session, eng)
    assert status == 404
    status, _, _ = await post(session, eng.url + "/chat/completions", chat_body())
    assert status == 200
