"""A few-seconds swarm run through a real gateway and simulated engines: the report is produced
and consistent (every request accounted for, per-engine figures add up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.config import ConfigError, load_config, parse_config
from loadtest.cluster import start_simulated_cluster
from loadtest.swarm.report import table
from loadtest.swarm.runner import agent_specs, run_scenario
from loadtest.swarm.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
FOUR = ROOT / "loadtest/configs/four-engines.toml"
LOCAL_REMOTE = ROOT / "loadtest/configs/local-remote.toml"


async def test_smoke_report_accounts_for_every_request():
    r = await run_scenario(load_config(FOUR), SCENARIOS["smoke"], policy="round-robin", seed=3)
    req = r["requests"]
    assert req["sent"] > 0 and req["errors"] == 0
    assert req["sent"] == req["ok"] + req["errors"] and req["accounted"]
    assert req["gateway_answered"] == req["sent"]  # the gateway saw exactly what the agents sent
    assert sum(e["requests"] for e in r["engines"].values()) == req["sent"]
    assert r["sessions"]["completed"] == r["sessions"]["count"] == 6
    assert set(r["sessions"]["by_kind"]) == {"chat", "rag", "summarizer"}
    assert r["turns"]["ok"] == r["turns"]["count"] > r["sessions"]["count"]
    lat = r["turns"]["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert 0 < r["ttft_s"]["p50"] <= lat["max"]
    assert r["tokens"]["completion"] > 0 and r["tokens"]["completion_per_s"] > 0
    assert len(r["engines"]) == 4 and all(e["requests"] > 0 for e in r["engines"].values())  # round-robin
    assert 0 < r["prefix_hit_rate"] < 1  # shared system prompt + tools hit; new text does not
    assert r["engine_ttft_mean_s"] > 0
    assert r["engine_e2e_p99_s"] >= r["engine_e2e_p50_s"] > 0  # from the engines' histograms
    assert r["remote_cost_usd"] == 0
    screen = table(r)
    assert "turn latency" in screen and "gpu-3" in screen and len(screen.splitlines()) < 25


async def test_remote_cost_is_reported(tmp_path):
    r = await run_scenario(load_config(LOCAL_REMOTE), SCENARIOS["smoke"], policy="round-robin", seed=1)
    remote = r["engines"]["remote-api"]
    assert remote["profile"] == "remote" and remote["requests"] > 0
    assert remote["cost_usd"] > 0 and r["remote_cost_usd"] == pytest.approx(remote["cost_usd"])
    assert r["engines"]["gpu-0"]["cost_usd"] == 0
    assert remote["prefix_hit_rate"] is None  # not observable on a remote API: not in the cluster rate
    local = [r["engines"][n] for n in ("gpu-0", "gpu-1")]
    assert r["prefix_hit_rate"] == pytest.approx(
        sum(e["prefix_hits_tokens"] for e in local) / sum(e["prefix_queries_tokens"] for e in local)
    )
    assert r["requests"]["errors"] == 0


def test_same_seed_same_agents_other_seed_other_agents():
    a, b, c = (agent_specs(SCENARIOS["agents-100"], s) for s in (5, 5, 6))
    assert a == b and a != c
    assert len(a) == 100 and len({x.session for x in a}) == 100
    assert {x.kind.priority for x in a} == {"interactive", "batch"}


@pytest.mark.slow  # a CLI in a child process that starts its own engines
def test_cli_writes_json_and_table(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.swarm",
            "--scenario",
            "smoke",
            "--config",
            str(FOUR),
            "--policy",
            "least-active",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "turn latency" in proc.stdout and "accounted yes" in proc.stdout
    report = orjson.loads(out.read_bytes())
    assert report["policy"] == "least-active" and report["requests"]["accounted"]


@pytest.mark.slow  # a CLI in a child process that starts its own engines
def test_cli_rejects_unknown_policy_and_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation.engine]\nprefil_s_per_token = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.swarm", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "prefil_s_per_token" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.swarm",
            "compare",
            "--config",
            str(FOUR),
            "--scenario",
            "smoke",
            "--policies",
            "nope",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown policy" in proc.stderr


def test_simulation_section_is_validated():
    with pytest.raises(ConfigError, match="unknown simulated-engine option"):
        parse_config("[simulation.backends.x]\nkv_blokcs = 3\n")
    with pytest.raises(ConfigError, match="no backend named 'gpu-9'"):
        parse_config("[simulation.backends.gpu-9]\nkv_blocks = 3\n")
    with pytest.raises(ConfigError, match="time_scale"):
        parse_config("[simulation]\ntime_scale = 0\n")


async def test_per_backend_engine_options_and_free_ports():
    config = load_config(LOCAL_REMOTE)
    rewritten, engines = await start_simulated_cluster(config)
    try:
        remote, gpu = engines["remote-api"].config, engines["gpu-0"].config
        assert remote.profile == "remote" and remote.price_per_output_token == 6e-7 and remote.rpm_limit == 600
        assert gpu.profile == "vllm" and gpu.price_per_output_token == 0 and gpu.max_num_seqs == 64
        urls = {b.name: b.url for b in rewritten.backends}
        assert urls["gpu-0"] == engines["gpu-0"].url != "http://127.0.0.1:18201/v1"
    finally:
        for e in engines.values():
            await e.stop()


async def test_plot_writes_a_png(tmp_path):
    from loadtest.swarm.plot import plot

    r = await run_scenario(load_config(FOUR), SCENARIOS["smoke"], seed=2)
    assert r["series"]["turns"] and all(r["series"]["engines"].values())
    out = tmp_path / "run.png"
    assert plot(r, str(out)) is True
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_engines_in_a_child_process_report_the_same_way():
    r = await run_scenario(
        load_config(LOCAL_REMOTE), SCENARIOS["smoke"], policy="round-robin", seed=1, engines_process=True
    )
    req = r["requests"]
    assert req["errors"] == 0 and req["accounted"] and req["gateway_answered"] == req["sent"]
    assert sum(e["requests"] for e in r["engines"].values()) == req["sent"]
    assert r["engines"]["remote-api"]["cost_usd"] > 0
    assert r["engines"]["gpu-0"]["prefix_hit_rate"] > 0


async def test_serve_simulate_starts_engines_with_the_simulation_section():
    """`switchyard serve --simulate` path: engines on the ports the config names, with its options."""
    import socket

    from loadtest.cluster import start_simulated_backends

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = parse_config(f"""
[simulation]
time_scale = 4
[simulation.engine]
decode_base_s = 0.01
[simulation.backends.far]
price_per_input_token = 0.000001
[[backends]]
name = "gpu"
kind = "vllm"
url = "http://127.0.0.1:{port}/v1"
[[backends]]
name = "far"
kind = "vllm"
url = "http://10.1.2.3:8000/v1"
""")
    engines = await start_simulated_backends(config)
    try:
        assert len(engines) == 1  # only loopback backends are simulated
        assert engines[0].port == port and engines[0].config.profile == "vllm"
        assert engines[0].config.decode_base_s == 0.01 and engines[0].config.time_scale == 4
        assert engines[0].config.price_per_input_token == 0  # another backend's override
    finally:
        for e in engines:
            await e.stop()


@pytest.mark.slow  # a CLI in a child process that starts its own engines
def test_cli_compare_prints_one_row_per_policy(tmp_path):
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.swarm",
            "compare",
            "--scenario",
            "smoke",
            "--config",
            str(FOUR),
            "--policies",
            "round-robin,least-active",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()]
    assert rows == ["round-robin", "least-active"]
    reports = orjson.loads(out.read_bytes())
    assert [r["policy"] for r in reports] == ["round-robin", "least-active"]
    assert all(
        r["requests"]["sent"] == reports[0]["requests"]["sent"] and r["requests"]["errors"] == 0 for r in reports
    )
