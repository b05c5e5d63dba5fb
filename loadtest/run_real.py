"""`make run-real`: REAL engines (llama.cpp server, vLLM CPU, SmolLM2-135M) on the ports a gateway
config names, then the gateway in front of them; Ctrl-C stops everything.

    python -m loadtest.run_real [--config loadtest/configs/real-engines.toml] [--no-vllm]

Every loopback backend of kind `llamacpp` or `vllm` gets an engine on its URL's port (install them
first: scripts/install-engines.sh). `--no-vllm` leaves vLLM out (~5 GiB, ~1 minute to start); the
models it served then stay not ready.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import ConfigError, load_config
from loadtest.real_engines import EnginesMissing, RealEngine, engine_paths, start_llama, start_vllm

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "real-engines.toml"
VLLM_ARGS = ("--max-num-seqs", "4", "--scheduling-policy", "priority", "--enable-prompt-tokens-details")


def engines_for(config_path: Path, with_vllm: bool) -> list[tuple[str, str, int]]:
    """(backend name, kind, port) of every loopback llamacpp / vllm backend in the config."""
    config = load_config(config_path)
    out = []
    for b in config.backends:
        url = urlsplit(b.url)
        kinds = ("llamacpp", "vllm") if with_vllm else ("llamacpp",)
        if url.hostname in ("127.0.0.1", "localhost") and b.kind in kinds:
            out.append((b.name, b.kind, url.port or 80))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.run_real", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--no-vllm", action="store_true", help="start the llama.cpp servers only")
    args = ap.parse_args(argv)
    try:
        wanted = engines_for(args.config, not args.no_vllm)
        paths = engine_paths().require(*sorted({"llama" if k == "llamacpp" else "vllm" for _, k, _ in wanted}))
    except (ConfigError, EnginesMissing) as e:
        print(f"run-real: {e}", file=sys.stderr)
        return 2
    engines: list[RealEngine] = []
    gateway: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for name, kind, port in wanted:
            engine = start_llama(paths, port=port) if kind == "llamacpp" else start_vllm(paths, *VLLM_ARGS, port=port)
            engines.append(engine)
            print(f"run-real: REAL engine {kind} for backend {name} starting on :{port} (log: {engine.log_path})")
        for engine in engines:
            engine.wait_ready()
            print(f"run-real: {engine.kind} on :{engine.port} ready after {engine.ready_after_s:.0f} s")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(args.config)])
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as e:
        print(f"run-real: {e}", file=sys.stderr)
        return 1
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGINT)
            try:
                gateway.wait(10)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    sys.exit(main())
