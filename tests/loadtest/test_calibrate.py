"""The calibration benchmark's parts that need no real engine: the fit's arithmetic, the conversion
into simulator tokens, the ranking and factor checks, and a tiny swarm through the gateway on
simulated engines (the same code path `make bench-real` runs)."""

from __future__ import annotations

import pytest

from loadtest.calibrate import agents, table
from loadtest.calibrate.__main__ import sim_side
from loadtest.calibrate.fit import Fit, line


def test_line_fit_and_its_origin_fallback() -> None:
    assert line([(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]) == pytest.approx((1.0, 2.0))
    intercept, slope = line([(100.0, 0.1), (1000.0, 4.0)])  # superlinear: a free fit's intercept < 0
    assert intercept == 0.0 and slope == pytest.approx((100 * 0.1 + 1000 * 4.0) / (100**2 + 1000**2))


def _fit(**kw) -> Fit:
    base = dict(
        prefill_s_per_token=0.004,
        ttft_overhead_s=0.05,
        decode_base_s=0.01,
        decode_per_seq_s=0.001,
        decode_step_s={1: 0.011},
        prefill_points=[(100, 0.45)],
        block_size=128,
        kv_tokens=23296,
        max_num_seqs=8,
        real_per_sim_token=1.25,
    )
    return Fit(**{**base, **kw})


def test_engine_config_is_in_simulator_tokens() -> None:
    cfg = _fit().engine_config("m")
    assert cfg.prefill_s_per_token == pytest.approx(0.005)  # 1.25 real tokens per simulator token
    assert cfg.block_size == 102 and cfg.kv_blocks == cfg.prefix_cache_blocks == 182
    assert cfg.ttft_s == pytest.approx(0.05 - 0.011)  # the first step is simulated on its own
    assert cfg.max_num_seqs == 8 and cfg.served_model_names == ["m"]


def _row(hit: float, turn: float) -> table.Row:
    return table.Row(hit, 1.0, 1.0, turn, turn, 10.0, 24, 0)


def test_ranking_check_judges_only_what_the_real_run_tells_apart() -> None:
    real = {"a": _row(0.5, 10.0), "b": _row(0.8, 10.5), "c": _row(0.6, 20.0)}
    sim = {"a": _row(0.4, 11.0), "b": _row(0.7, 10.0), "c": _row(0.9, 9.0)}
    assert table.disagreements(real, sim, "turn_mean_s") == ["a vs c", "b vs c"]  # a vs b: a tie in the real run
    assert table.disagreements(real, sim, "hit_rate") == ["b vs c"]
    verdict = table.verdict(real, sim)
    assert verdict["hit_rate"]["real_ranking"] == ["b", "c", "a"]
    assert verdict["turn_mean_s"]["worst_factor"] == pytest.approx(20 / 9, abs=0.01)
    assert verdict["turn_mean_s"]["within_factor"] is False


async def test_tiny_swarm_on_simulated_engines() -> None:
    fit = _fit(prefill_s_per_token=0.00002, decode_base_s=0.002, decode_per_seq_s=0.0, ttft_overhead_s=0.0)
    # 3 agents on 2 engines: round-robin must move at least one agent's second turn
    w = agents.Workload(agents=3, turns=2, answer_tokens=4, think_s=0.0, ramp_s=0.01)
    rows = await sim_side(fit, ["round-robin", "session-affinity"], w, repeat=1)
    for row in rows.values():
        assert row.calls == 6 and row.errors == 0
        assert 0 < row.hit_rate < 1  # the shared system prompt hits, each new turn's tail does not
    assert rows["session-affinity"].hit_rate > rows["round-robin"].hit_rate
