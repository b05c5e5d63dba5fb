"""The optional `[simulation]` section of a gateway config: how `--simulate` and the agent swarm
build the SIMULATED engine behind each loopback backend.

```toml
[simulation]
time_scale = 1.0                       # every simulated duration / time_scale (wall = simulated / scale)

[simulation.engine]                    # defaults for every simulated engine (loadtest/ENGINE.md fields)
prefill_s_per_token = 0.00005
decode_base_s = 0.01

[simulation.backends.remote-api]       # overrides for one backend, by backend name
remote_latency_s = 0.4
price_per_input_token = 0.00000015
```

The gateway itself ignores this section; only `loadtest.cluster.start_simulated_backends` reads it.
Keys are checked against `EngineConfig`'s fields so a typo is a config error, not a silent default.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Set per backend by start_simulated_backends (profile from the backend kind, seed from its index).
_MANAGED = {"profile", "seed", "time_scale"}


def _engine_fields() -> set[str]:
    from loadtest.engine.config import EngineConfig

    return {f.name for f in fields(EngineConfig)} - _MANAGED


def _check_keys(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _engine_fields())
    if unknown:
        raise ValueError(f"unknown simulated-engine option(s): {', '.join(unknown)} (see loadtest/ENGINE.md)")
    return options


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_scale: float = Field(1.0, gt=0, description="simulated seconds per wall second")
    engine: dict[str, Any] = Field({}, description="EngineConfig fields for every simulated engine")
    backends: dict[str, dict[str, Any]] = Field({}, description="per-backend EngineConfig overrides, by backend name")

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_keys(v)

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for options in v.values():
            _check_keys(options)
        return v

    def options_for(self, backend: str) -> dict[str, Any]:
        """EngineConfig keyword arguments for one backend (defaults, then its overrides)."""
        return {**self.engine, **self.backends.get(backend, {}), "time_scale": self.time_scale}


def simulation_cross_check(raw: dict[str, Any], backends: set[Any]) -> list[tuple[str, str]]:
    """`[simulation.backends.<name>]` must name a backend of the same config."""
    simulation = raw.get("simulation")
    overrides = simulation.get("backends") if isinstance(simulation, dict) else None
    return [
        (f"simulation.backends.{name}", f"no backend named {name!r}")
        for name in (overrides if isinstance(overrides, dict) else [])
        if name not in backends
    ]
