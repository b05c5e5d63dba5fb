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
    engines: list[SimEngine] = []
    for i, backend in enumerate(config.backends):
        url = urlsplit(backend.url)
        if url.hostname not in LOOPBACK or backend.kind not in PROFILE_OF_KIND:
            continue
        profile = PROFILE_OF_KIND[backend.kind]
        engine = await start_engine(
            EngineConfig(profile=profile, seed=i, **engine_options),  # type: ignore[arg-type]
            host=url.hostname, port=url.port or 80,
        )
        engines.append(engine)
        get_logger("switchyard.simulator").warning(
            "SIMULATED engine started: not a real model, made-up text",
            backend=backend.name, profile=profile, url=engine.url,
        )
    return engines
