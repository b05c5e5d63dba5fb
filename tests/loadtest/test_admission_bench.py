"""The admission benchmark (loadtest/admission_bench.py) in a few seconds: every mode runs on the same
agents, the report has the judged fields, and the queue modes answer what "no queue" refuses."""

from __future__ import annotations

import orjson
import pytest

from gateway.admission.config import AdmissionConfig
from loadtest import admission_bench as ab


def test_modes_and_knobs_parse():
    modes = ab.parse_modes("las,fcfs,none,las:credit=50:promote=5", ab.parse_knobs("half_life=30"))
    assert [m.policy for m in modes] == ["las", "fcfs", "none", "las"]
    assert modes[3].fairness == {"half_life_s": 30.0, "wait_credit_tokens_per_s": 50.0, "promote_after_s": 5.0}
    for bad in ("lifo", "las:speed=2", "las,las"):
        with pytest.raises(ValueError):
            ab.parse_modes(bad)


def test_simulated_seconds_become_wall_seconds():
    cfg = ab.admission_for(ab.Mode("las", "las", {"promote_after_s": 4.0}), scale=0.5)
    default = AdmissionConfig()
    assert cfg.enabled and cfg.fairness.policy == "las"
    assert cfg.fairness.promote_after_s == 8.0  # 4 simulated seconds at half speed
    assert cfg.fairness.half_life_s == default.fairness.half_life_s * 2
    assert cfg.fairness.wait_credit_tokens_per_s == default.fairness.wait_credit_tokens_per_s / 2
    assert cfg.max_wait("interactive") == default.max_wait("interactive") * 2
    assert ab.admission_for(ab.Mode("fcfs", "fcfs"), 1.0).fairness.policy == "fcfs"
    assert ab.admission_for(ab.Mode("none", "none"), 1.0).enabled is False


def test_arrivals_are_the_same_sessions_at_every_load():
    mix = ab.MIXES["agentic"]
    slow, fast = ab.arrivals(mix, 40, 1, rate=0.5), ab.arrivals(mix, 40, 1, rate=1.5)
    assert [(p.index, p.kind) for p in slow] == [(p.index, p.kind) for p in fast]
    assert {p.kind for p in slow} == set(mix.shares) and len(slow) == 40
    assert all(abs(a.start_s - 3 * b.start_s) < 1e-9 for a, b in zip(slow, fast, strict=True))  # 3x the rate
    assert ab.arrivals(mix, 40, 2, rate=0.5) != slow


async def test_a_small_run_reports_every_mode(tmp_path):
    out = tmp_path / "bench.json"
    args = ab._parser().parse_args(
        [
            "--mix",
            "smoke",
            "--engines",
            "1",
            "--slots",
            "3",
            "--time-scale",
            "1",
            "--calibrate",
            "0.5",
            "--sessions",
            "12",
            "--load",
            "3",
            "--modes",
            "las,fcfs,none",
            "--engines-inline",
            "--json",
            str(out),
        ]
    )
    result = await ab.bench(args)
    out.write_bytes(orjson.dumps(result))
    cap = result["capacity"]
    assert cap["sessions_per_s"] > 0 and 0 < cap["interactive_share_of_demand"] < 1
    assert result["unloaded"][0]["calls"]["errors"] == 0
    assert [r["mode"] for r in result["runs"]] == ["las", "fcfs", "none"]
    las, fcfs, none = result["runs"]
    assert las["arrivals_per_min"] == none["arrivals_per_min"] == pytest.approx(3 * 60 * cap["sessions_per_s"])
    assert las["sessions"]["count"] == fcfs["sessions"]["count"] == none["sessions"]["count"] == 12
    for r in (las, fcfs):  # the queue answers everything
        assert r["calls"]["errors"] == 0 and r["sessions"]["completed"] == r["sessions"]["count"]
        assert r["sessions"]["mean_s"] > 0 and r["interactive"]["turn_p95_s"] > 0
        assert r["batch"]["completed"] == r["batch"]["count"] > 0
    assert none["calls"]["errors_by_type"].get("http_503", 0) > 0  # no queue: refused at the bound
    agg = result["aggregate"]
    assert {"3x las", "3x fcfs", "3x none"} <= set(agg)
    assert {t["target"].split(",")[0] for t in result["targets"]} >= {
        ">= 30% lower mean session time",
        "zero errors with the queue (LAS) where no queue has 503s",
    }
    screen = ab.table(result)
    assert "3x las" in screen and "unloaded" in screen and ("PASS" in screen or "FAIL" in screen)


@pytest.mark.parametrize("name", sorted(ab.MIXES))
def test_mixes_are_consistent(name):
    mix = ab.MIXES[name]
    assert set(mix.shares) <= set(mix.kinds) and sum(mix.shares.values()) == pytest.approx(1.0)
    for kind in mix.kinds:  # the session id ends with the kind: the queue-wait hook splits on the last "-"
        assert "-" not in kind, kind
