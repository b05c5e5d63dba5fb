"""Retry budget, backoff with full jitter, Retry-After parsing, and the [resilience] config."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from gateway.config import ConfigError, parse_config
from gateway.resilience import RetryBudget, backoff_s, parse_retry_after


class Clock:
    t = 500.0

    def __call__(self) -> float:
        return self.t


def test_budget_allows_a_share_of_recent_requests() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_retries=0, window_s=10, clock=clock)
    for _ in range(100):
        budget.record_request()
    spent = sum(budget.try_spend() for _ in range(100))
    assert spent == 20
    clock.t += 11  # the window slid past: nothing to spend until new requests arrive
    assert not budget.try_spend()
    for _ in range(10):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(10)) == 2


def test_budget_minimum_for_quiet_traffic() -> None:
    budget = RetryBudget(ratio=0.2, min_retries=3, window_s=10, clock=Clock())
    budget.record_request()
    assert sum(budget.try_spend() for _ in range(10)) == 3


def test_full_jitter_backoff_stays_within_the_exponential_cap() -> None:
    rng = random.Random(7)
    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0), (20, 1.0)):
        samples = [backoff_s(retry, 0.1, 1.0, rng) for _ in range(300)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8 and min(samples) < ceiling * 0.2  # jitter spans the range


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3
    assert parse_retry_after({"Retry-After": "0.5"}) == 0.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": formatdate(now + 7, usegmt=True)}, now=now) == pytest.approx(7, abs=1)
    assert parse_retry_after({"Retry-After": formatdate(now - 60, usegmt=True)}, now=now) == 0


BASE = """
[[backends]]
name = "a"
kind = "vllm"
url = "http://127.0.0.1:9/v1"
timeouts = { connect_s = 1, ttfb_s = 30, idle_s = 5 }
breaker = { consecutive_failures = 2, open_s = 1 }

[[models]]
name = "m"
fallbacks = ["n"]
ttfb_s = 120
hedge_after_s = 0.5
deployments = [{ backend = "a", model = "x" }]

[[models]]
name = "n"
deployments = [{ backend = "a", model = "y" }]
"""


def test_resilience_config_parses_and_rejects_mistakes() -> None:
    cfg = parse_config(
        BASE + "\n[resilience]\nmax_attempts = 4\nbudget_ratio = 0.1\n[resilience.breaker]\nopen_s = 3\n"
    )
    assert cfg.resilience.max_attempts == 4 and cfg.resilience.breaker.open_s == 3
    assert cfg.backends[0].breaker is not None and cfg.backends[0].breaker.consecutive_failures == 2
    assert cfg.backends[0].timeouts is not None and cfg.backends[0].timeouts.ttfb_s == 30
    assert cfg.models[0].fallbacks == ["n"] and cfg.models[0].ttfb_s == 120
    with pytest.raises(ConfigError) as e:
        parse_config(
            BASE.replace('fallbacks = ["n"]', 'fallbacks = ["nope"]')
            + "\n[resilience]\nretries = 3\nretry_on = [200]\n"
        )
    where = dict(e.value.problems)
    assert "resilience.retries" in where and where["resilience.retries"] == "unknown key"
    assert any(loc.startswith("resilience.retry_on") for loc in where)
    assert any(loc.endswith(".fallbacks") and "nope" in msg for loc, msg in where.items())
