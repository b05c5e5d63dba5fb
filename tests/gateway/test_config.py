"""Config validation: good and bad files, TOML and YAML, env interpolation, locations in errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

ISSUE_MINIMAL = """
[server]
host = "127.0.0.1"
port = 4000

[[backends]]
name = "local-vllm"
kind = "vllm"                      # vllm | sglang | tgi | llamacpp | candle | openai | litellm ...
url = "http://127.0.0.1:8001/v1"
max_concurrency = 64

[[models]]
name = "llama-3.1-8b"              # what clients put in "model"
policy = "least-active"
deployments = [{ backend = "local-vllm", model = "meta-llama/Llama-3.1-8B-Instruct", weight = 1 }]

[[teams]]
name = "research"

[[keys]]
name = "research-agents"
team = "research"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
models = ["llama-3.1-8b"]          # or ["*"]
"""

SAME_AS_YAML = """
server: {host: 127.0.0.1, port: 4000}
backends:
  - {name: local-vllm, kind: vllm, url: "http://127.0.0.1:8001/v1", max_concurrency: 64}
models:
  - name: llama-3.1-8b
    policy: least-active
    deployments: [{backend: local-vllm, model: meta-llama/Llama-3.1-8B-Instruct, weight: 1}]
teams: [{name: research}]
keys:
  - {name: research-agents, team: research, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, models: [llama-3.1-8b]}
"""


def problems_of(text: str, fmt: str = "toml", env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, fmt=fmt, env=env or {})
    return info.value.problems


def test_the_issue_minimal_file_is_accepted_exactly_as_written() -> None:
    config = parse_config(ISSUE_MINIMAL, env={})
    assert config.server.port == 4000
    assert config.backends[0].max_concurrency == 64
    assert config.models[0].deployments[0].model == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.keys[0].models == ["llama-3.1-8b"]


def test_yaml_and_toml_share_one_schema() -> None:
    assert parse_config(SAME_AS_YAML, fmt="yaml", env={}) == parse_config(ISSUE_MINIMAL, env={})


def test_env_interpolation_fills_secrets_and_defaults() -> None:
    text = ISSUE_MINIMAL.replace(
        "max_concurrency = 64", 'max_concurrency = 64\napi_key = "${VLLM_KEY}"\nheaders = { x-org = "${ORG:-acme}" }'
    )
    config = parse_config(text, env={"VLLM_KEY": "s3cret"})
    backend = config.backends[0]
    assert backend.api_key is not None and backend.api_key.get_secret_value() == "s3cret"
    assert backend.headers == {"x-org": "acme"}
    assert "s3cret" not in repr(config)  # secrets never print


def test_missing_env_variable_is_an_error_with_location() -> None:
    text = ISSUE_MINIMAL.replace("max_concurrency = 64", 'max_concurrency = 64\napi_key = "${NOPE}"')
    assert ("backends[0].api_key", "environment variable NOPE is not set") in problems_of(text)


def test_unknown_keys_are_errors_not_ignored() -> None:
    text = ISSUE_MINIMAL.replace("port = 4000", "port = 4000\nprot = 1").replace(
        "weight = 1 }", "weight = 1, wieght = 2 }"
    )
    found = dict(problems_of(text))
    assert found["server.prot"] == "unknown key"
    assert found["models[0](llama-3.1-8b).deployments[0].wieght"] == "unknown key"


def test_every_error_is_reported_with_its_location_at_once() -> None:
    text = (
        ISSUE_MINIMAL.replace('kind = "vllm"', 'kind = "vllmm"')
        .replace('url = "http://127.0.0.1:8001/v1"', 'url = "127.0.0.1:8001"')
        .replace('sha256 = "9f86', 'sha256 = "zz86')
    )
    locs = [loc for loc, _ in problems_of(text)]
    assert "backends[0](local-vllm).kind" in locs
    assert "backends[0](local-vllm).url" in locs
    assert "keys[0](research-agents).sha256" in locs


def test_cross_references_must_resolve() -> None:
    text = ISSUE_MINIMAL.replace('backend = "local-vllm"', 'backend = "gpu-9"').replace(
        'team = "research"', 'team = "ops"'
    )
    found = dict(problems_of(text))
    assert found["models[0](llama-3.1-8b).deployments[0].backend"] == "no backend named 'gpu-9'"
    assert found["keys[0](research-agents).team"] == "no team named 'ops'"


def test_duplicate_names_and_unknown_policy() -> None:
    text = ISSUE_MINIMAL + '\n[[teams]]\nname = "research"\n'
    text = text.replace('policy = "least-active"', 'policy = "fastest"')
    found = problems_of(text)
    assert ("teams[1](research).name", "duplicate name 'research'") in found
    assert any(loc == "models[0](llama-3.1-8b).policy" and "unknown policy" in msg for loc, msg in found)


def test_syntax_error_is_reported_not_raised() -> None:
    assert problems_of("[server\nport = 1")[0][0] == "syntax"
    assert problems_of("server: [1, 2", fmt="yaml")[0][0] == "syntax"


def test_shipped_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "config.toml")
    assert {m.name for m in config.models} >= {"llama-3.1-8b"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli_prints_errors_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SAME_AS_YAML.replace("port: 4000", "port: 99999").replace("kind: vllm", "kind: nope"))
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "server.port" in result.stderr and "backends[0](local-vllm).kind" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(ISSUE_MINIMAL)
    ok = run_cli("check-config", str(good))
    assert ok.returncode == 0 and "OK" in ok.stdout
