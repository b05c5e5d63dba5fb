"""Simulated GPU inference engine (vLLM, SGLang, TGI, llama.cpp, plain, remote API).

    from loadtest.engine import EngineConfig, Fault, start_engine
    engine = await start_engine(EngineConfig(profile="vllm", seed=1), port=0)
    client = AsyncOpenAI(base_url=engine.url, api_key="x")
    ...
    await engine.stop()

See loadtest/ENGINE.md.
"""

from .config import PROFILES, EngineConfig
from .faults import Fault
from .server import SimEngine, start_engine, start_engines
from .stats import EngineStats

__all__ = [
    "PROFILES",
    "EngineConfig",
    "EngineStats",
    "Fault",
    "SimEngine",
    "start_engine",
    "start_engines",
]
