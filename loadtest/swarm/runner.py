"""Run one scenario: SIMULATED engines for the config's loopback backends, a gateway in-process in
front of them, N agents through the gateway with the openai SDK, then the report."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any, Callable

import aiohttp
from openai import AsyncOpenAI

from gateway.config import Config
from gateway.server import start_gateway
from loadtest.cluster import start_simulated_cluster
from loadtest.swarm import report, workload
from loadtest.swarm.agent import Agent, AgentSpec, Recorder
from loadtest.swarm.probe import EngineProbe, sample_loop
from loadtest.swarm.scenarios import Scenario
from policies.base import Policy

DEFAULT_KEY = "sk-swarm-local"


def with_policy(config: Config, policy: str | None) -> Config:
    """The config with every model routed by `policy` (None = as configured)."""
    if policy is None:
        return config
    return config.model_copy(update={"models": [m.model_copy(update={"policy": policy}) for m in config.models]})


def agent_specs(scenario: Scenario, seed: int) -> list[AgentSpec]:
    """The agents of a scenario, deterministic for a seed: kinds interleaved, starts spread evenly."""
    rng = random.Random(seed)
    kinds = [k for k, n in scenario.counts().items() for _ in range(n)]
    rng.shuffle(kinds)
    system = workload.system_prompt(scenario.system_tokens)
    step = scenario.ramp_s / max(1, len(kinds))
    return [
        AgentSpec(f"{scenario.name}-{seed}-{i:04d}-{k}", scenario.kinds[k], rng.randrange(2**32), i * step, system)
        for i, k in enumerate(kinds)
    ]


def _gateway_requests(registry: Any) -> float:
    total = 0.0
    for family in registry.collect():
        if family.name == "switchyard_requests":
            total += sum(s.value for s in family.samples if s.name == "switchyard_requests_total")
    return total


async def run_scenario(
    config: Config, scenario: Scenario, *, policy: str | None = None, seed: int = 0,
    api_key: str = DEFAULT_KEY, model: str | None = None, time_scale: float | None = None,
    policy_factory: Callable[[], Policy] | None = None, policy_label: str | None = None,
    sample_every_s: float = 0.25,
) -> dict[str, Any]:
    """Run `scenario` once and return the report dict. `policy_factory` installs a policy object that
    is not in the registry (the validator's session pinning) on every model route."""
    config = with_policy(config, policy)
    if time_scale is not None:
        sim = config.simulation.model_copy(update={"time_scale": time_scale}) if config.simulation else None
        config = config.model_copy(update={"simulation": sim})
    scale = config.simulation.time_scale if config.simulation else 1.0
    options = dict(scenario.engine)
    if config.simulation is None:
        options["time_scale"] = scale
    config, engines = await start_simulated_cluster(config, **options)
    if not engines:
        raise ValueError("the config has no loopback backend to simulate")
    model = model or config.models[0].name
    gw = await start_gateway(config, host="127.0.0.1", port=0)
    if policy_factory is not None:
        for route in gw.gateway.router.routes():
            route.policy = policy_factory()
    label = policy_label or policy or (config.models[0].policy if config.models else "-")
    probes = [EngineProbe(name, e) for name, e in engines.items()]
    client = AsyncOpenAI(base_url=gw.url, api_key=api_key, max_retries=0, timeout=600.0)
    sampler: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            before = {p.name: await p.snapshot(http) for p in probes}
            rec = Recorder()
            sampler = asyncio.create_task(sample_loop(probes, http, rec.t0, sample_every_s))
            agents = [Agent(client, model, spec, rec, scale) for spec in agent_specs(scenario, seed)]
            await asyncio.gather(*(a.run() for a in agents))
            wall = time.perf_counter() - rec.t0
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            after = {p.name: await p.snapshot(http) for p in probes}
        return report.build(
            scenario=scenario.name, policy=label, seed=seed, time_scale=scale, wall_s=wall, rec=rec,
            probes=probes, before=before, after=after,
            gateway_requests=_gateway_requests(gw.gateway.metrics.registry),
        )
    finally:
        if sampler is not None:
            sampler.cancel()
        await client.close()
        await gw.stop()
        for e in engines.values():
            await e.stop()
