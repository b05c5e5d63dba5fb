"""The soak harness (loadtest/soak.py) end to end, for a few seconds: traffic flows without errors
and the gateway's RSS is sampled and summarized."""

from __future__ import annotations

import pytest

from loadtest.soak import soak, summarize


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_soak_harness_runs_streams_and_samples_rss() -> None:
    result = await soak(minutes=0.15, concurrency=2, sample_s=1.0, turns=3, warmup_frac=0.2)
    assert result["requests"] > 10 and result["errors"] == 0
    assert result["chunks"] > result["requests"]  # streamed, several chunks each
    assert len(result["samples"]) >= 8
    assert 20 < result["rss_end_mib"] < 1000
    assert abs(result["growth_after_warmup_pct"]) < 50


def test_growth_is_measured_after_warm_up() -> None:
    mib = 2**20
    samples = [(float(t), (100 if t < 20 else 200) * mib) for t in range(0, 100, 10)]  # jumps during warm-up
    assert summarize(samples, warmup_frac=0.2)["growth_after_warmup_pct"] == 0.0
    leaking = [(float(t), (200 + t) * mib) for t in range(0, 100, 10)]
    assert summarize(leaking, warmup_frac=0.2)["growth_after_warmup_pct"] > 5
