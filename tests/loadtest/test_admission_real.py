"""loadtest/admission_real.py without an engine: each mode's gateway config, the percentile."""

from __future__ import annotations

import pytest

from loadtest import admission_real as ar
from loadtest.real_engines import attach


@pytest.mark.parametrize(
    ("mode", "enabled", "max_concurrency", "field"),
    [
        ("unloaded", False, None, None),
        ("none", False, None, None),
        ("tight", True, 4, None),
        ("queue", True, 6, None),
        ("priority", True, 6, "vllm"),
    ],
)
def test_each_mode_configures_the_gateway(mode, enabled, max_concurrency, field) -> None:
    cfg = ar.gateway_config(attach("vllm", 8123), mode, seqs=4, headroom=2)
    (backend,) = cfg.backends
    assert backend.url == "http://127.0.0.1:8123/v1" and backend.kind == "vllm"
    assert cfg.admission.enabled is enabled
    assert backend.max_concurrency == max_concurrency
    assert backend.priority_field == field


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 21)]
    assert ar.pct(values, 50) == 10.0
    assert ar.pct(values, 95) == 19.0
    assert ar.pct([3.0], 95) == 3.0
    assert ar.pct([], 50) is None


def test_unknown_modes_are_refused() -> None:
    assert ar.main(["--modes", "none,fastest"]) == 2
