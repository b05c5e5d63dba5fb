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
    "vllm": "vllm", "sglang": "sglang", "tgi": "tgi", "llamacpp": "llamacpp",
    "candle": "plain", "mistralrs": "plain", "tei": "plain",
    "openai": "remote", "openai-compatible": "remote",
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
    backends = [
        b.model_copy(update={"url": engines[b.name].url}) if b.name in engines else b for b in config.backends
    ]
    return config.model_copy(update={"backends": backends}), engines


async def _start(config: Config, free_ports: bool, engine_options: dict[str, object]) -> dict[str, SimEngine]:
    engines: dict[str, SimEngine] = {}
    for i, backend in enumerate(config.backends):
        url = urlsplit(backend.url)
        if url.hostname not in LOOPBACK or backend.kind not in PROFILE_OF_KIND:
            continue
        profile = PROFILE_OF_KIND[backend.kind]
        options = config.simulation.options_for(backend.name) if config.simulation else {}
        options.update(engine_options)
        engine = await start_engine(
            EngineConfig(profile=profile, seed=i, **options),  # type: ignore[arg-type]
            host=url.hostname, port=0 if free_ports else (url.port or 80),
        )
        engines[backend.name] = engine
        get_logger("switchyard.simulator").warning(
            "SIMULATED engine started: not a real model, made-up text",
            backend=backend.name, profile=profile, url=engine.url,
        )
    return engines
