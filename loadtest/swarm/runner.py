"""Run one scenario: SIMULATED engines for the config's loopback backends, a gateway in-process in
front of them, N agents through the gateway with the openai SDK, then the report."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from gateway.config import Config
from gateway.server import start_gateway
from loadtest.swarm import report, workload
from loadtest.swarm.agent import Agent, AgentSpec, Recorder
from loadtest.swarm.engines import EngineHost
from loadtest.swarm.probe import EngineProbe, lag_loop, sample_loop
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
    config: Config,
    scenario: Scenario,
    *,
    policy: str | None = None,
    seed: int = 0,
    api_key: str = DEFAULT_KEY,
    model: str | None = None,
    time_scale: float | None = None,
    policy_factory: Callable[[], Policy] | None = None,
    policy_label: str | None = None,
    sample_every_s: float = 0.25,
    engines_process: bool = False,
) -> dict[str, Any]:
    """Run `scenario` once and return the report dict. `policy_factory` installs a policy object that
    is not in the registry (the validator's session pinning) on every model route; `engines_process`
    runs the simulated engines in a child process (see loadtest/swarm/engines.py)."""
    config = with_policy(config, policy)
    if time_scale is not None:
        sim = config.simulation.model_copy(update={"time_scale": time_scale}) if config.simulation else None
        config = config.model_copy(update={"simulation": sim})
    scale = config.simulation.time_scale if config.simulation else 1.0
    options = dict(scenario.engine)
    if config.simulation is None:
        options["time_scale"] = scale
    host = EngineHost(separate_process=engines_process)
    config, refs = await host.start(config, **options)
    model = model or config.models[0].name
    try:
        gw = await start_gateway(config, host="127.0.0.1", port=0)
    except BaseException:
        await host.stop()
        raise
    if policy_factory is not None:
        for route in gw.gateway.router.routes():
            route.policy = policy_factory()
    label = policy_label or policy or (config.models[0].policy if config.models else "-")
    probes = [EngineProbe(r) for r in refs]
    client = AsyncOpenAI(base_url=gw.url, api_key=api_key, max_retries=0, timeout=600.0)
    sampler: asyncio.Task[None] | None = None
    lag: list[float] = []
    lagger = asyncio.create_task(lag_loop(lag))
    try:
        async with aiohttp.ClientSession() as http:
            before = {p.name: await p.snapshot(http) for p in probes}
            rec = Recorder()
            sampler = asyncio.create_task(sample_loop(probes, http, rec.t0, sample_every_s))
            lag.clear()
            agents = [Agent(client, model, spec, rec, scale) for spec in agent_specs(scenario, seed)]
            await asyncio.gather(*(a.run() for a in agents))
            wall = time.perf_counter() - rec.t0
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            after = {p.name: await p.snapshot(http) for p in probes}
        return report.build(
            scenario=scenario.name,
            policy=label,
            seed=seed,
            time_scale=scale,
            wall_s=wall,
            rec=rec,
            probes=probes,
            before=before,
            after=after,
            gateway_requests=_gateway_requests(gw.gateway.metrics.registry),
            loop_lag=lag,
        )
    finally:
        lagger.cancel()
        if sampler is not None:
            sampler.cancel()
        await client.close()
        await gw.stop()
        await host.stop()
