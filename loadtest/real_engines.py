"""REAL engines as child processes: llama.cpp's llama-server and vLLM (CPU build), serving
SmolLM2-135M-Instruct on loopback. Installed by scripts/install-engines.sh (cached by version under
~/.cache/switchyard/engines); used by tests/real/ and the calibration benchmark.

    paths = engine_paths()                        # EnginesMissing (with the install command) if absent
    eng = start_llama(paths, slots=4)             # or start_vllm(paths, "--max-num-seqs", "2")
    eng.wait_ready()                              # blocks until /health answers 200
    await eng.metrics()                           # {"vllm:num_requests_running": 0.0, ...} (series summed)
    eng.stop()                                    # SIGTERM, then SIGKILL; eng.kill() kills at once
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backends.load_signals import parse_samples

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install-engines.sh"
MODEL = "smollm2"  # the name both engines serve the model under


class EnginesMissing(RuntimeError):
    """The engines are not installed (or not runnable): the message says how to install them."""


@dataclass(frozen=True)
class EnginePaths:
    gguf: Path
    hf_model: Path
    llama_server: Path
    vllm_python: Path
    vllm_launcher: Path

    def require(self, *parts: str) -> EnginePaths:
        """EnginesMissing (with the install command) unless the named parts ("llama", "vllm") are installed."""
        wanted = {"llama": [self.gguf, self.llama_server], "vllm": [self.hf_model / ".done", self.vllm_python]}
        missing = [str(f) for part in parts for f in wanted[part] if not f.exists()]
        if missing:
            raise EnginesMissing(
                f"real engines not installed ({', '.join(missing)} missing): run "
                f"`bash {INSTALL.relative_to(REPO)}` (first run ~25 minutes on 2 cores, cached after) "
                "or `make test-real`, which runs it"
            )
        return self


def engine_paths() -> EnginePaths:
    """Where scripts/install-engines.sh puts the engines (installed or not: see require())."""
    out = subprocess.run(["bash", str(INSTALL), "--print-env"], capture_output=True, text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return EnginePaths(
        Path(env["SWITCHYARD_GGUF"]),
        Path(env["SWITCHYARD_HF_MODEL"]),
        Path(env["SWITCHYARD_LLAMA_SERVER"]),
        Path(env["SWITCHYARD_VLLM_PYTHON"]),
        Path(env["SWITCHYARD_VLLM_LAUNCHER"]),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RealEngine:
    kind: str  # "vllm" | "llamacpp" (the gateway's backend kind)
    port: int
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    startup_s: float = 120.0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    _log: object = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def start(self) -> RealEngine:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def attached(self) -> bool:
        """An engine this process did not start (attach()): never stopped from here."""
        return self.proc is None

    def health(self) -> int | None:
        """GET /health status, None when nothing answers."""
        try:
            with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return None

    def wait_ready(self, timeout_s: float | None = None) -> RealEngine:
        deadline = time.monotonic() + (timeout_s or self.startup_s)
        while time.monotonic() < deadline:
            if not self.attached and not self.alive():
                raise RuntimeError(f"{self.kind} on :{self.port} exited while starting:\n{self.log_tail()}")
            if self.health() == 200:
                self.ready_after_s = time.monotonic() - self.started_at
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"{self.kind} on :{self.port} not ready after {timeout_s or self.startup_s} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metrics_text_sync(self) -> str:
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
            return r.read().decode()

    async def metrics_text(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.base + "/metrics") as r:
            return await r.text()

    async def metrics(self, *names: str) -> dict[str, float]:
        """The named series (all of the engine's own when none named), each summed over its labels."""
        text = await self.metrics_text()
        return _summed(text, names)

    def metrics_sync(self, *names: str) -> dict[str, float]:
        return _summed(self.metrics_text_sync(), names)

    def kill(self) -> None:
        """SIGKILL at once (an engine crash)."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def attach(kind: str, port: int) -> RealEngine:
    """An engine already running on a loopback port (for iterating on tests without restarts)."""
    return RealEngine(kind, port, [], {}, Path(os.devnull))


def _summed(text: str, names: tuple[str, ...]) -> dict[str, float]:
    if not names:
        names = tuple({line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"})
    return {n: sum(v) for n, v in parse_samples(text, set(names)).items()}


_LOG_DIR: list[Path] = []


def _log_dir() -> Path:
    """One folder for this process's engine logs ($SWITCHYARD_ENGINE_LOGS, else a temporary one)."""
    if not _LOG_DIR:
        d = Path(os.environ.get("SWITCHYARD_ENGINE_LOGS") or tempfile.mkdtemp(prefix="switchyard-engines-"))
        d.mkdir(parents=True, exist_ok=True)
        _LOG_DIR.append(d)
    return _LOG_DIR[0]


def start_llama(
    paths: EnginePaths, *extra: str, slots: int = 4, ctx: int = 8192, threads: int = 1, port: int | None = None
) -> RealEngine:
    """llama-server with SmolLM2 (Q4_1 GGUF), `slots` parallel slots sharing a `ctx`-token KV cache,
    metrics and slot endpoints on. Ready in ~2 s, ~100 MB."""
    paths.require("llama")
    port = port or free_port()
    cmd = [str(paths.llama_server), "-m", str(paths.gguf), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--metrics", "--slots", "-np", str(slots), "-c", str(ctx), "-t", str(threads), "--alias", MODEL, *extra]
    env = {**os.environ, "LD_LIBRARY_PATH": str(paths.llama_server.parent)}
    return RealEngine("llamacpp", port, cmd, env, _log_dir() / f"llama-{port}.log", startup_s=60).start()


VLLM_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def start_vllm(
    paths: EnginePaths, *extra: str, port: int | None = None, env: dict[str, str] | None = None
) -> RealEngine:
    """vLLM (V1 engine, CPU) with SmolLM2 in float32 (reproducible greedy answers), prefix caching on
    (128-token blocks on CPU). Ready in ~30-60 s, ~5 GiB. `extra`: more `vllm serve` arguments."""
    paths.require("vllm")
    port = port or free_port()
    cmd = [str(paths.vllm_python), str(paths.vllm_launcher), "serve", str(paths.hf_model)]
    cmd += ["--served-model-name", MODEL, "--dtype", "float32", "--max-model-len", "2048"]
    cmd += ["--enable-prefix-caching", "--enforce-eager", "--host", "127.0.0.1", "--port", str(port), *extra]
    full_env = {**os.environ, **VLLM_ENV, **(env or {})}
    return RealEngine("vllm", port, cmd, full_env, _log_dir() / f"vllm-{port}.log", startup_s=300).start()


def main() -> None:
    """`python -m loadtest.real_engines`: print the paths, or the install hint (exit 1)."""
    try:
        print(engine_paths().require("llama", "vllm"))
    except EnginesMissing as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
