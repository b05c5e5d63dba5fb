"""Token estimates (tiktoken, offline), prices (litellm's bundled map + config), budget periods, config."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.config import ConfigError, parse_config
from gateway.limits import estimate
from gateway.limits.config import PriceConfig
from gateway.limits.periods import period_of
from gateway.limits.prices import FREE, from_config, resolve


@pytest.fixture(scope="module")
def counters() -> dict:
    return estimate.load_counters({"cl100k_base", "o200k_base"})


def test_tiktoken_encodings_load_offline(counters: dict) -> None:
    assert set(counters) == {"cl100k_base", "o200k_base"}
    assert counters["cl100k_base"]("Hello world") == 2


def test_chat_prompt_count_follows_openai_cookbook(counters: dict) -> None:
    count = counters["cl100k_base"]
    payload = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hello world", "name": "bob"},
        ]
    }
    # 3 reply priming + per message (3 + role + content) + name (1 + tokens)
    expected = (
        3
        + (3 + count("system") + count("You are helpful."))
        + (3 + count("user") + count("Hello world") + 1 + count("bob"))
    )
    assert estimate.prompt_tokens("chat", payload, count) == expected
    with_tools = dict(payload, tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}])
    assert estimate.prompt_tokens("chat", with_tools, count) > expected


def test_encoding_choice_and_output_allowance() -> None:
    assert estimate.encoding_for("gpt-4o-mini") == "o200k_base"
    assert estimate.encoding_for("llama-3.1-8b") == "cl100k_base"
    assert estimate.output_allowance("chat", {"max_tokens": 50, "n": 2}, 4096) == 100
    assert estimate.output_allowance("chat", {"max_completion_tokens": 7}, 4096) == 7
    assert estimate.output_allowance("chat", {}, 4096) == 4096
    assert estimate.output_allowance("embeddings", {"max_tokens": 9}, 4096) == 0


def test_litellm_price_map_read_without_importing_litellm() -> None:
    # In a fresh interpreter: other tests in this process (the litellm backend's) import litellm.
    import subprocess
    import sys

    code = (
        "import sys; from gateway.limits.prices import load_price_map; prices = load_price_map(); "
        "assert 'litellm' not in sys.modules, 'litellm was imported'; "
        "print(prices['gpt-4o-mini']['input_cost_per_token'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0


def test_price_resolution_config_overrides_map() -> None:
    class D:
        def __init__(self, model: str, local: bool) -> None:
            self.upstream_model = model
            self.backend = type("B", (), {"local": local})()

    class R:
        def __init__(self, alias: str, deps: list) -> None:
            self.alias, self.deployments = alias, deps

    price_map = {
        "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "max_input_tokens": 128000}
    }
    out = resolve(
        [R("mini", [D("gpt-4o-mini", False)]), R("local", [D("gpt-4o-mini", True)]), R("cfg", [])],
        {"cfg": PriceConfig(input_per_mtok=1, output_per_mtok=2, context_window=10)},
        price_map,
    )
    assert out["mini"].source == "litellm:gpt-4o-mini" and out["mini"].context_window == 128000
    assert out["mini"].cost(1_000_000, 0) == 150_000_000  # $0.15 in nano-USD
    assert out["local"] is FREE  # a local engine is not priced like the API model it serves
    assert (
        out["cfg"].cost(1000, 1000)
        == from_config(PriceConfig(input_per_mtok=1, output_per_mtok=2)).cost(1000, 1000)
        == 3_000_000
    )


def test_periods_follow_calendar_boundaries_in_the_time_zone() -> None:
    tz = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 8, 23, 30, tzinfo=tz).timestamp()  # the day DST starts (23 h long)
    daily = period_of("daily", now, tz)
    assert daily.id == "2026-03-08"
    assert daily.ends_at == datetime(2026, 3, 9, 0, 0, tzinfo=tz).timestamp()
    weekly = period_of("weekly", now, tz)
    assert weekly.id == "2026-W10" and weekly.ends_at == datetime(2026, 3, 9, tzinfo=tz).timestamp()  # Monday
    monthly = period_of("monthly", datetime(2026, 12, 31, 23, 59, tzinfo=tz).timestamp(), tz)
    assert monthly.id == "2026-12" and monthly.ends_at == datetime(2027, 1, 1, tzinfo=tz).timestamp()
    assert period_of("none", now, tz).ends_at is None


def test_config_errors_are_located() -> None:
    text = """
[limits]
rules = [{ scope = "key", name = "*" }, { scope = "galaxy", requests_per_minute = 1 }]
[budgets]
timezone = "Mars/Olympus"
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    locs = [loc for loc, _ in exc.value.problems]
    assert "limits.rules[0](*)" in locs and "limits.rules[1].scope" in locs and "budgets.timezone" in locs


def test_cached_prompt_tokens_are_priced_apart() -> None:
    from gateway.context import RequestContext
    from gateway.forward import record_usage

    ctx = RequestContext(request_id="r", endpoint="chat", started=0.0)
    record_usage(ctx, {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 800}})
    assert ctx.usage.cached_tokens == 800
    price = from_config(PriceConfig(input_per_mtok=1.0, cached_input_per_mtok=0.1, output_per_mtok=2.0))
    # 200 fresh x $1/M + 800 cached x $0.1/M + 10 x $2/M, in nano-USD
    assert price.cost(1000, 10, ctx.usage.cached_tokens) == 200_000 + 80_000 + 20_000
    no_cache_price = from_config(PriceConfig(input_per_mtok=1.0, output_per_mtok=2.0))
    assert no_cache_price.cost(1000, 10, 800) == 1_000_000 + 20_000  # no cached price: all at the input price
