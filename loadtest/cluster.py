"""Start SIMULATED engines for the backends of a gateway config that point at this machine.

Used by `switchyard serve --simulate`, the agent swarm and tests. The engines are stand-ins (no
GPU, no model, made-up text) and say so in the log.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config import Config
from gateway.logs import get_logger
from loadtest.engine import EngineConfig, SimEngine, start_engine

# backend kind -> simulated engine profile
PROFILE_OF_KIND = {
    "vllm": "vllm",
    "sglang": "sglang",
    "tgi": "tgi",
    "llamacpp": "llamacpp",
    "candle": "plain",
    "mistralrs": "plain",
    "tei": "plain",
    "openai": "remote",
    "openai-compatible": "remote",
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


async def start_simulated_backends(config: Config, **engine_options: object) -> list[SimEngine]:
    """One engine per loopback backend, on the port its URL names. Options: the config's
    `[simulation]` section (defaults, then the backend's overrides), then `engine_options` (which win)."""
    return list((await _start(config, False, engine_options)).values())


async def start_simulated_cluster(config: Config, **engine_options: object) -> tuple[Config, dict[str, SimEngine]]:
    """Like start_simulated_backends, but every engine on a free port: returns the config with those
    backends' URLs rewritten, and the engines by backend name (benchmarks and tests run side by side)."""
    engines = await _start(config, True, engine_options)
    return with_urls(config, {name: e.url for name, e in engines.items()}), engines


def with_urls(config: Config, urls: dict[str, str]) -> Config:
    """The config with the named backends' URLs replaced."""
    backends = [b.model_copy(update={"url": urls[b.name]}) if b.name in urls else b for b in config.backends]
    return config.model_copy(update={"backends": backends})


def simulated_engine_configs(config: Config, **engine_options: object) -> dict[str, tuple[EngineConfig, str, int]]:
    """(EngineConfig, host, port) for every backend the simulator can stand in for, by backend name.
    Options: the config's `[simulation]` section (defaults, then the backend's overrides), then
    `engine_options` (which win)."""
    out: dict[str, tuple[EngineConfig, str, int]] = {}
    for i, backend in enumerate(config.backends):
        url = urlsplit(backend.url)
        if url.hostname not in LOOPBACK or backend.kind not in PROFILE_OF_KIND:
            continue
        options = config.simulation.options_for(backend.name) if config.simulation else {}
        options.update(engine_options)
        cfg = EngineConfig(profile=PROFILE_OF_KIND[backend.kind], seed=i, **options)
        out[backend.name] = (cfg, url.hostname, url.port or 80)
    return out


async def _start(config: Config, free_ports: bool, engine_options: dict[str, object]) -> dict[str, SimEngine]:
    engines: dict[str, SimEngine] = {}
    try:
        for name, (cfg, host, port) in simulated_engine_configs(config, **engine_options).items():
            engines[name] = engine = await start_engine(cfg, host=host, port=0 if free_ports else port)
            announce(name, cfg.profile, engine.url)
    except BaseException:
        for e in engines.values():
            await e.stop()
        raise
    return engines


def announce(backend: str, profile: str, url: str) -> None:
    get_logger("switchyard.simulator").warning(
        "SIMULATED engine started: not a real model, made-up text",
        backend=backend,
        profile=profile,
        url=url,
    )
