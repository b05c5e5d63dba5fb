"""Standalone simulated engine: python -m loadtest.engine --port 9001 [--profile vllm] ..."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields

from .config import PROFILES, REALISTIC, EngineConfig
from .server import start_engine

log = logging.getLogger("loadtest.engine")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.engine", description="SIMULATED inference engine (no GPU, no model)."
    )
    a = p.add_argument
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=9001)
    a("--profile", choices=PROFILES, default="vllm")
    a("--seed", type=int, default=0)
    a("--time-scale", type=float, default=1.0)
    a("--ttft", dest="ttft_s", type=float, default=0.0, help="fixed extra TTFT, seconds")
    a("--itl", dest="itl_s", type=float, default=0.0, help="fixed inter-token delay, seconds")
    a("--output-tokens", type=int, default=16)
    a("--output-tokens-max", type=int, default=0)
    a("--max-num-seqs", type=int, default=256)
    a("--kv-blocks", type=int, default=2048)
    a("--block-size", type=int, default=16)
    a("--prefill-s-per-token", type=float, default=None)
    a("--decode-base-s", type=float, default=None)
    a("--decode-per-seq-s", type=float, default=None)
    a(
        "--realistic",
        action="store_true",
        help=f"switch the batching cost model on with {REALISTIC} (explicit flags win)",
    )
    a("--prefix-cache-blocks", type=int, default=4096)
    a("--no-preemption", dest="preemption", action="store_false")
    a("--max-model-len", type=int, default=32768)
    a(
        "--served-model-name",
        dest="served_model_names",
        action="append",
        default=[],
        help="repeat for several names; none = accept any model name",
    )
    a("--embedding-dim", type=int, default=384)
    a("--rpm-limit", type=int, default=0)
    a("--tpm-limit", type=int, default=0)
    a("--remote-latency", dest="remote_latency_s", type=float, default=0.0)
    a("--price-per-input-token", type=float, default=0.0)
    a("--price-per-output-token", type=float, default=0.0)
    a("--legacy-kv-metric", action="store_true")
    return p


def config_from_args(ns: argparse.Namespace) -> EngineConfig:
    values = {f.name: getattr(ns, f.name) for f in fields(EngineConfig) if hasattr(ns, f.name)}
    for name, realistic in REALISTIC.items():
        if values.get(name) is None:
            values[name] = realistic if ns.realistic else 0.0
    return EngineConfig(**values)


async def serve(cfg: EngineConfig, host: str, port: int) -> None:
    engine = await start_engine(cfg, host, port)
    log.warning(
        "SIMULATED inference engine (no GPU, no model): profile=%s listening on %s (OpenAI base URL %s)",
        cfg.profile,
        engine.base,
        engine.url,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await engine.stop()


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(config_from_args(ns), ns.host, ns.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
