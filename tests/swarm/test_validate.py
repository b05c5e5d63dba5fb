"""The validator's logic: claims pass or fail on the figures, the pinning policy is stable."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from loadtest.swarm.compare import SessionPin, check, check_table, passed, policy_names
from policies import POLICIES


def _report(hit: float, eng_ttft: float, ttft50: float, p99: float, waiting: float, errors: int = 0) -> dict[str, Any]:
    return {
        "prefix_hit_rate": hit,
        "engine_ttft_mean_s": eng_ttft,
        "ttft_s": {"p50": ttft50},
        "engine_e2e_p99_s": p99 / 2,
        "loop_lag_s": {"p99": 0.01},
        "turns": {"latency_s": {"p99": p99}},
        "waiting_peak": waiting,
        "requests": {"sent": 100, "ok": 100 - errors, "errors": errors, "accounted": True, "gateway_answered": 100},
    }


def test_all_claims_pass_on_expected_figures():
    rr = _report(0.67, 0.15, 0.2, 11.2, 2)
    pinned = _report(0.86, 0.08, 0.12, 10.0, 2)
    over = _report(0.6, 0.5, 0.9, 28.1, 20)
    results = check(pinned, rr, rr, over)
    assert [r["passed"] for r in results] == [True] * 7 and passed(results)
    assert "86.0%" in results[0]["detail"] and "67.0%" in results[0]["detail"]


def test_claims_fail_when_the_simulator_does_not_show_the_effect():
    rr = _report(0.67, 0.15, 0.2, 11.2, 2)
    no_gain = _report(0.60, 0.20, 0.25, 11.0, 2)
    dropping = _report(0.6, 0.5, 0.9, 11.0, 2, errors=5)
    results = check(no_gain, rr, rr, dropping)
    failed = {r["claim"] for r in results if not r["passed"] and r["judged"]}
    assert failed == {
        "pinning raises the prefix-cache hit rate",
        "pinning cuts engine time to first token",
        "overload grows the waiting queue",
        "overload grows tail latency",
        "overload drops no request",
    }
    assert not passed(results)


def test_client_side_figures_are_reported_not_judged():
    rr = _report(0.67, 0.15, 0.2, 11.2, 2)
    pinned = _report(0.86, 0.08, 0.5, 10.0, 2)  # client TTFT worse: a lagging client loop
    over = _report(0.6, 0.5, 0.9, 28.1, 20)
    results = check(pinned, rr, rr, over)
    client = [r for r in results if r["claim"].startswith("client TTFT")]
    assert client and not client[0]["passed"] and not client[0]["judged"]
    assert passed(results)
    assert "info" in check_table(results) and "FAIL" not in check_table(results)


def test_session_pin_is_stable_and_spreads_sessions():
    deployments = [SimpleNamespace(name=f"gpu-{i}/m") for i in range(4)]
    pin = SessionPin()
    chosen = {}
    for s in range(200):
        ctx = SimpleNamespace(session_id=f"session-{s}")
        first = pin.choose(deployments, ctx).name
        assert all(pin.choose(deployments, ctx).name == first for _ in range(3))
        chosen[s] = first
    counts = [list(chosen.values()).count(d.name) for d in deployments]
    assert min(counts) > 25  # every engine gets a fair share of the sessions


def test_compare_covers_every_registered_policy_round_robin_first():
    names = policy_names(None)
    assert names[0] == "round-robin" and set(names) == set(POLICIES)
    assert policy_names("least-active, round-robin") == ["least-active", "round-robin"]
    with pytest.raises(ValueError, match="unknown policy"):
        policy_names("round-robin,nope")


async def test_pinning_sessions_raises_prefix_hits_through_the_gateway():
    """The first validator claim on the smoke scenario: the same agents, once spread round-robin
    over 4 engines, once pinned per session; follow-up turns only hit where the session ran before."""
    from pathlib import Path

    from gateway.config import load_config
    from loadtest.swarm.runner import run_scenario
    from loadtest.swarm.scenarios import SCENARIOS

    config = load_config(Path(__file__).resolve().parents[2] / "loadtest/configs/four-engines.toml")
    rr = await run_scenario(config, SCENARIOS["smoke"], policy="round-robin", seed=4)
    pinned = await run_scenario(config, SCENARIOS["smoke"], seed=4, policy_factory=SessionPin, policy_label="pin")
    assert pinned["policy"] == "pin" and rr["requests"]["sent"] == pinned["requests"]["sent"]
    assert pinned["prefix_hit_rate"] > rr["prefix_hit_rate"] + 0.05


def test_histogram_quantile_interpolates_like_prometheus():
    from loadtest.swarm.probe import parse_buckets, quantile

    text = (
        'x_bucket{model_name="m",le="0.1"} 50.0\nx_bucket{model_name="m",le="0.5"} 90.0\n'
        'x_bucket{model_name="m",le="1.0"} 100.0\nx_bucket{model_name="m",le="+Inf"} 100.0\n'
        'x_count{model_name="m"} 100.0\n'
    )
    buckets = parse_buckets(text, "x")
    assert buckets == {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == pytest.approx(0.1)
    assert quantile(buckets, 0.7) == pytest.approx(0.3)
    assert quantile(buckets, 0.99) == pytest.approx(0.95)
    assert quantile({}, 0.5) is None
