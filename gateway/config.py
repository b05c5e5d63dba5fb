"""Configuration: one schema, read from TOML or YAML, `${ENV}` interpolated, validated strictly.

Unknown keys are errors (`extra="forbid"` everywhere). Every problem is reported with its location
(`backends[0].url`), all at once, so `switchyard check-config` can print the whole list.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from backends import BACKEND_KINDS
from backends.adaptive import AdaptiveConfig
from backends.load_config import LoadMetrics, LoadSignalsConfig
from gateway.admission.config import AdmissionConfig, PriorityClass
from gateway.apis.responses.store import ResponsesConfig
from gateway.batch.config import BatchConfig
from gateway.cache.config import CacheConfig
from gateway.cache.config import cross_check as cache_cross_check
from gateway.limits.config import BudgetsConfig, LimitsConfig, PriceConfig
from gateway.limits.quota_config import DeploymentQuotaConfig
from gateway.ops_config import KeyStoreConfig, TracingConfig
from gateway.resilience_config import BreakerConfig, ResilienceConfig
from loadtest.sim_config import SimulationConfig
from policies import POLICIES, policy_options


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    connect_s: float = Field(5.0, gt=0, description="TCP connect to the upstream")
    read_s: float = Field(600.0, gt=0, description="longest wait for any upstream read (first byte or next chunk)")
    total_s: float | None = Field(None, gt=0, description="whole request; None = no limit (long streams)")
    ttfb_s: float | None = Field(None, gt=0, description="request sent -> first response byte; None = read_s")
    idle_s: float | None = Field(None, gt=0, description="longest gap between stream chunks; None = read_s")


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    timeouts: Timeouts = Timeouts()
    # What the gateway holds of an upstream's answer; docs/operations.md "Limits and timeouts".
    max_upstream_body_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="a non-streamed upstream answer (or error body) longer than this is refused as 502 "
        "`upstream_response_too_large`, the upstream connection closed",
    )
    max_upstream_event_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="one upstream SSE event longer than this ends the stream as broken (502 before its first byte)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, else JSON
    admin_key_sha256: str | None = None
    health_check_interval_s: float = Field(10.0, gt=0)
    # Client connections (gateway/httpguard.py); docs/operations.md "Limits and timeouts".
    max_connections: int = Field(
        4096, ge=1, description="open client connections per process (lowered to fit the open-files limit)"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="connection open / first byte -> end of request headers")
    body_timeout_s: float = Field(60.0, gt=0, description="end of headers -> end of the request body")
    keepalive_timeout_s: float = Field(75.0, gt=0, description="idle keep-alive connection between requests")
    write_timeout_s: float = Field(
        60.0,
        gt=0,
        description="a client that reads nothing while the gateway's send buffer is full for this long is "
        "disconnected: its request is cancelled and the engine's slot freed",
    )
    half_close_grace_s: float = Field(
        0.5,
        ge=0,
        description="a client that shut down its sending side still gets an answer ready within this; after it, "
        "its request counts as a disconnect (cancelled, upstream closed, not charged), as nginx's 499",
    )
    cors_origins: list[str] = Field(
        [], description="origins allowed to call the API from a browser (CORS); '*' = any; empty = CORS off"
    )
    echo_alias: bool = Field(
        False, description="answers carry the alias the client asked for in `model`, not the upstream's name"
    )

    @field_validator("admin_key_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        return None if v is None else _check_sha256(v)


class RedisConfig(Strict):
    """Shared state for several gateway processes (limits, budgets, caches). Unset = in memory."""

    url: str = Field(description="redis://host:port/db")
    max_connections: int = Field(200, gt=0)
    timeout_s: float = Field(0.25, gt=0, description="longest wait for a pooled connection or a reply")
    key_prefix: str = "switchyard:"


class BackendConfig(Strict):
    name: str = Field(min_length=1)
    kind: str
    url: str
    api_key: SecretStr | None = None
    max_concurrency: int | None = Field(None, gt=0)
    headers: dict[str, str] = {}
    timeouts: Timeouts | None = None
    local: bool | None = Field(None, description="a local GPU engine (default by kind) or a remote API")
    stream_usage: bool = Field(True, description="engine accepts stream_options.include_usage")
    adaptive_concurrency: AdaptiveConfig | None = Field(
        None, description="learn max_concurrency from time to first byte (AIMD; backends/adaptive.py)"
    )
    priority_field: Literal["vllm", "sglang"] | None = Field(
        None,
        description="send the request class as the engine's `priority` field: vllm (lower first; needs "
        "--scheduling-policy priority) or sglang (higher first; needs --enable-priority-scheduling)",
    )
    breaker: BreakerConfig | None = Field(None, description="this backend's breakers; None = resilience.breaker")
    load_metrics: LoadMetrics = Field("auto", description="which engine's /metrics names give its load; auto = by kind")
    metrics_url: str | None = Field(
        None, description="the engine's Prometheus endpoint; None = url without /v1 + /metrics"
    )
    limits: DeploymentQuotaConfig | None = Field(
        None, description="the upstream's own quota, per deployment (gateway/limits/deployment_quota.py)"
    )
    native_apis: list[Literal["responses", "messages"]] | None = Field(
        None,
        description="client APIs this backend serves itself (passed through, not translated to chat "
        "completions); None = by kind (openai: responses, anthropic: messages, others: none)",
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in BACKEND_KINDS:
            raise ValueError(f"unknown kind {v!r}; expected one of: {', '.join(sorted(BACKEND_KINDS))}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8001/v1")
        return v.rstrip("/")


class DeploymentConfig(Strict):
    backend: str
    model: str = Field(min_length=1, description="model name the upstream expects")
    weight: float = Field(1.0, gt=0)


class ModelConfig(Strict):
    name: str = Field(min_length=1, description="the alias clients put in `model`")
    policy: str = "least-active"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    fallbacks: list[str] = Field([], description="aliases tried in order when no deployment can serve")
    ttfb_s: float | None = Field(None, gt=0, description="time to first byte for this model (long prefill)")
    hedge_after_s: float | None = Field(None, gt=0, description="no first byte after this: send a second copy")
    policy_options: dict[str, Any] = Field({}, description="the policy's options (policies/options.py)")
    echo_alias: bool | None = Field(
        None, description="answers carry this alias in `model` instead of the upstream name; None = server.echo_alias"
    )

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; expected one of: {', '.join(sorted(POLICIES))}")
        return v

    @model_validator(mode="after")
    def _policy_options(self) -> "ModelConfig":
        if self.policy in POLICIES:
            try:
                policy_options(self.policy, self.policy_options)
            except ValidationError as e:
                raise ValueError(
                    f"policy_options for {self.policy!r}: "
                    + "; ".join(f"{'.'.join(map(str, err['loc'])) or '(options)'}: {_msg(err)}" for err in e.errors())
                ) from None
        return self


class TeamConfig(Strict):
    name: str = Field(min_length=1)
    priority: PriorityClass | None = Field(None, description="default class of its keys' requests (interactive)")
    max_priority: PriorityClass | None = Field(None, description="highest class its keys may ask for (interactive)")


class KeyConfig(Strict):
    name: str = Field(min_length=1)
    team: str
    sha256: str
    models: list[str] = ["*"]
    priority: PriorityClass | None = Field(None, description="default class (else the team's, else interactive)")
    max_priority: PriorityClass | None = Field(None, description="highest class it may ask for (else the team's)")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        return _check_sha256(v)


class Config(Strict):
    server: ServerConfig = ServerConfig()
    redis: RedisConfig | None = None
    backends: list[BackendConfig] = []
    models: list[ModelConfig] = []
    teams: list[TeamConfig] = []
    keys: list[KeyConfig] = []
    resilience: ResilienceConfig = ResilienceConfig()
    simulation: SimulationConfig | None = None  # simulated engines for --simulate / the swarm (loadtest/)
    load_signals: LoadSignalsConfig = LoadSignalsConfig()
    limits: LimitsConfig | None = None  # gateway/limits/: rate limits
    budgets: BudgetsConfig | None = None  # gateway/limits/: spend budgets
    prices: dict[str, PriceConfig] = {}  # gateway/limits/: per-model prices, override litellm's map
    cache: CacheConfig | None = None  # response caches (gateway/cache/); None = no caching
    keystore: KeyStoreConfig = KeyStoreConfig()  # admin-created keys (gateway/keystore.py)
    tracing: TracingConfig = TracingConfig()  # OpenTelemetry (gateway/tracing.py)
    admission: AdmissionConfig = AdmissionConfig()  # the admission queue (gateway/admission/)
    responses: ResponsesConfig = ResponsesConfig()  # Responses API state (gateway/apis/responses/store.py)
    batch: BatchConfig = BatchConfig()  # the OpenAI Batch API (gateway/batch/)


def _check_sha256(v: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise ValueError("must be the 64 hex digits of a SHA-256 hash (see `switchyard keys new`)")
    return v.lower()


class ConfigError(Exception):
    """All problems found in one file, each as (location, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} error(s)"]
        lines += [f"  {loc}: {msg}" for loc, msg in self.problems]
        return "\n".join(lines)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [("file", f"cannot read: {e.strerror or e}")]) from None
    return parse_config(text, fmt=_format_of(path), source=str(path), env=env)


def parse_config(text: str, fmt: str = "toml", source: str = "<config>", env: dict[str, str] | None = None) -> Config:
    try:
        raw = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(source, [("syntax", str(e).replace("\n", " "))]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [("(root)", "the file must hold a table/mapping at the top level")])
    problems: list[tuple[str, str]] = []
    raw = _interpolate(raw, os.environ if env is None else env, "", problems)
    config = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        problems += [(_loc(err["loc"], raw), _msg(err)) for err in e.errors()]
    problems += cross_check(raw)
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def _format_of(path: Path) -> str:
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "toml"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, env: Any, loc: str, problems: list[tuple[str, str]]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; a missing variable is an error."""
    if isinstance(node, dict):
        return {k: _interpolate(v, env, f"{loc}.{k}" if loc else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{loc}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(m: re.Match[str]) -> str:
            value = env.get(m.group(1), m.group(2))
            if value is None:
                problems.append((loc, f"environment variable {m.group(1)} is not set"))
                return ""
            return value

        return _ENV.sub(sub, node)
    return node


def _loc(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    out, node = "", cast(Any, raw)  # walks into lists and scalars too
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            if name:
                out += f"({name})"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(root)"


def _msg(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def cross_check(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Checks that span sections: unique names and references that must resolve.

    Works on the raw mapping (tolerating wrong types, which the schema reports) so these problems
    are listed together with the schema's, not only once the schema passes.
    """
    problems: list[tuple[str, str]] = []

    def items(section: str) -> list[dict[str, Any]]:
        value = raw.get(section)
        return [x if isinstance(x, dict) else {} for x in value] if isinstance(value, list) else []

    def unique(section: str) -> set[Any]:
        seen: set[Any] = set()
        for i, item in enumerate(items(section)):
            n = item.get("name")
            if n in seen:
                problems.append((f"{section}[{i}]({n}).name", f"duplicate name {n!r}"))
            if isinstance(n, str):
                seen.add(n)
        return seen

    backends, models, teams = unique("backends"), unique("models"), unique("teams")
    unique("keys")
    from loadtest.sim_config import simulation_cross_check  # here: keeps the import block merge-friendly

    problems += simulation_cross_check(raw, backends)
    for i, m in enumerate(items("models")):
        deployments = m.get("deployments")
        for j, d in enumerate(deployments if isinstance(deployments, list) else []):
            ref = d.get("backend") if isinstance(d, dict) else None
            if isinstance(ref, str) and ref not in backends:
                problems.append((f"models[{i}]({m.get('name')}).deployments[{j}].backend", f"no backend named {ref!r}"))
        fallbacks = m.get("fallbacks")
        for f in fallbacks if isinstance(fallbacks, list) else []:
            if isinstance(f, str) and (f not in models or f == m.get("name")):
                problems.append((f"models[{i}]({m.get('name')}).fallbacks", f"no other model named {f!r}"))
    hashes: set[str] = set()
    for i, k in enumerate(items("keys")):
        where = f"keys[{i}]({k.get('name')})"
        team = k.get("team")
        if isinstance(team, str) and team not in teams:
            problems.append((f"{where}.team", f"no team named {team!r}"))
        allowed = k.get("models")
        for m in allowed if isinstance(allowed, list) else []:
            if m != "*" and m not in models:
                problems.append((f"{where}.models", f"no model named {m!r}"))
        digest = str(k.get("sha256", "")).lower()
        if digest and digest in hashes:
            problems.append((f"{where}.sha256", "the same key hash appears twice"))
        hashes.add(digest)
    problems += cache_cross_check(raw, models)
    responses = raw.get("responses")
    if isinstance(responses, dict) and responses.get("store") == "redis" and not raw.get("redis"):
        problems.append(("responses.store", "'redis' needs the [redis] section"))
    batch = raw.get("batch")
    if isinstance(batch, dict) and batch.get("store") == "redis" and not raw.get("redis"):
        problems.append(("batch.store", "'redis' needs the [redis] section"))
    return problems
