"""The learned concurrency limit (backends/adaptive.py): AIMD on time to first byte."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backends.adaptive import AdaptiveConfig, AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_fast_answers_grow_the_limit_by_about_one_per_window() -> None:
    limit = AdaptiveLimit(AdaptiveConfig(initial=4, max=64, target_ttfb_s=0.5), clock=Clock())
    for _ in range(5):  # about one window of fast answers: +1
        limit.sample(0.1)
    assert limit.value == 5
    for _ in range(1000):  # additive: ~sqrt(2 x 1000) after 1000 answers, not exponential
        limit.sample(0.1)
    assert 40 <= limit.value <= 50


def test_slow_or_failed_answers_cut_it_once_per_burst_and_never_below_min() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AdaptiveConfig(initial=20, min=2, target_ttfb_s=1.0), clock=clock)
    for _ in range(10):  # one burst of slow answers within target_ttfb_s: one cut
        limit.sample(3.0)
    assert limit.value == 14
    clock.now = 1.5
    limit.sample(None, failed=True)  # a timeout / 5xx / 429 later: another cut
    assert limit.value == 9
    for i in range(20):
        clock.now = 3 + i * 2
        limit.sample(5.0)
    assert limit.value == 2


def test_the_config_is_checked() -> None:
    with pytest.raises(ValidationError):
        AdaptiveConfig(initial=1, min=2)
