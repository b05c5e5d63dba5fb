"""docker/: the Prometheus config passes promtool, the compose stack is complete, the image runs as
non-root with a HEALTHCHECK, the bundled gateway config is valid, and every metric the Grafana
dashboard queries is in the catalogue (docs/metrics.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from gateway.config import load_config
from tests.ops.catalogue import ROOT, base_names, catalogue

DOCKER = ROOT / "docker"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")
def test_prometheus_config_passes_promtool() -> None:
    out = subprocess.run(
        ["promtool", "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_runs_the_whole_stack_from_files_that_exist() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert {"gateway", "redis", "prometheus", "grafana", "engine-a", "engine-b"} <= set(compose["services"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"
    targets = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    assert "gateway:4000" in targets[0]["static_configs"][0]["targets"]


def test_image_is_non_root_with_a_healthcheck() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\S+)", final_stage, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert "HEALTHCHECK" in final_stage and "/health/live" in final_stage
    assert "-slim" in final_stage.splitlines()[0]


def test_bundled_gateway_config_is_valid() -> None:
    config = load_config(DOCKER / "switchyard.toml", env={})
    assert config.redis is not None and [b.name for b in config.backends] == ["engine-a", "engine-b"]


def test_every_metric_on_the_dashboard_is_in_the_catalogue() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "switchyard.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\b(switchyard_[a-z0-9_]+)", target["expr"]))
    documented = set(catalogue())
    unknown = sorted(n for n in queried if not (base_names(n) & documented))
    assert not unknown, f"queried by the dashboard but not in docs/metrics.md: {', '.join(unknown)}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("traffic", "latency", "first token", "error", "spend", "cache hit", "breaker", "kv", "queue"):
        assert topic in titles, f"no dashboard panel about {topic}"
