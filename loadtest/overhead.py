"""Gateway overhead benchmark: a small non-streamed chat completion sent directly to a fast upstream
vs through Switchyard, measured in one run with wrk.

    python -m loadtest.overhead [--duration 10] [--connections 50] [--json out.json]

The upstream is nginx answering a canned chat completion (so the upstream costs next to nothing
and the difference is the gateway), or, without nginx, the simulated engine with zero delays. The
gateway runs as `switchyard serve` in its own process, logging every request (to /dev/null), as
deployed. Beside them, a bare aiohttp pass-through (loadtest/bare_proxy.py: no auth, routing,
logs or metrics) shows the floor any aiohttp gateway pays on the same machine in the same run.
Reports requests/s at N connections and p50/p99 latency at 1 connection, all three ways.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.keys import hash_key

KEY = "sk-bench"
REQUEST = {"model": "bench", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
CANNED = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi there, how can I help?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "total_tokens": 17, "completion_tokens": 8},
    },
    separators=(",", ":"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_upstream(tmp: Path, port: int) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        conf = tmp / "nginx.conf"
        body = CANNED.replace("'", "\\'")
        conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port};
    location /v1/chat/completions {{ default_type application/json; return 200 '{body}'; }}
    location /v1/models {{ default_type application/json; return 200 '{{"object":"list","data":[]}}'; }}
  }}
}}""")
        return subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL
        ), "nginx (canned JSON)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine", "--port", str(port), "--profile", "vllm"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, "simulated engine (zero delay)"


def write_config(path: Path, port: int, upstream_port: int, extra: str = "", backend_extra: str = "") -> None:
    """The benchmark gateway's config: one fast backend, model "bench", key KEY; `extra` TOML
    (e.g. [limits]) goes before the first table array, `backend_extra` into the backend's table."""
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
log_level = "info"
{extra}
[[backends]]
name = "fast"
kind = "vllm"
url = "http://127.0.0.1:{upstream_port}/v1"
{backend_extra}[[models]]
name = "bench"
deployments = [{{ backend = "fast", model = "bench-upstream" }}]
[[teams]]
name = "bench"
[[keys]]
name = "bench"
team = "bench"
sha256 = "{hash_key(KEY)}"
""")


def start_gateway(tmp: Path, port: int, upstream_port: int, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    conf = tmp / "gateway.toml"
    write_config(conf, port, upstream_port)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf), *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def write_wrk_script(tmp: Path) -> Path:
    script = tmp / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(REQUEST))}\n'
        f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    return script


def wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no Requests/sec line:\n{out}")
    rps = float(found.group(1))
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct.get("50", float("nan")),
        "p99_ms": pct.get("99", float("nan")),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        script = write_wrk_script(tmp)
        up_port, gw_port, bare_port = free_port(), free_port(), free_port()
        upstream, upstream_kind = start_upstream(tmp, up_port)
        gateway = start_gateway(tmp, gw_port, up_port)
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest.bare_proxy",
                "--port",
                str(bare_port),
                "--upstream",
                f"http://127.0.0.1:{up_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        urls = {
            name: f"http://127.0.0.1:{port}/v1/chat/completions"
            for name, port in (("direct", up_port), ("bare", bare_port), ("gateway", gw_port))
        }
        try:
            for port in (up_port, gw_port, bare_port):
                wait_port(port)
            for name in ("bare", "gateway"):
                wrk(urls[name], 10, 2, script)  # warm-up: connection pools, caches
            results: dict[str, Any] = {"upstream": upstream_kind}
            for conns in (1, args.connections):
                for name, url in urls.items():
                    results[f"{name}_c{conns}"] = wrk(url, conns, args.duration, script)
        finally:
            for proc in (gateway, bare, upstream):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    c = args.connections
    r = results
    added = r["gateway_c1"]["p50_ms"] - r["direct_c1"]["p50_ms"]
    bare_added = r["bare_c1"]["p50_ms"] - r["direct_c1"]["p50_ms"]
    print(f"upstream: {r['upstream']}   machine: {os.cpu_count()} cores")
    print(f"{'':22}{'direct':>12}{'bare aiohttp':>14}{'switchyard':>14}")
    print(
        f"{'p50 @1 conn (ms)':22}"
        + "".join(f"{r[f'{n}_c1']['p50_ms']:{w}.3f}" for n, w in (("direct", 12), ("bare", 14), ("gateway", 14)))
        + f"   added: bare {bare_added:.3f} ms, switchyard {added:.3f} ms"
    )
    print(
        f"{'p99 @1 conn (ms)':22}"
        + "".join(f"{r[f'{n}_c1']['p99_ms']:{w}.3f}" for n, w in (("direct", 12), ("bare", 14), ("gateway", 14)))
    )
    print(
        f"{f'req/s @{c} conn':22}"
        + "".join(f"{r[f'{n}_c{c}']['rps']:{w}.0f}" for n, w in (("direct", 12), ("bare", 14), ("gateway", 14)))
        + f"   switchyard/bare {r[f'gateway_c{c}']['rps'] / r[f'bare_c{c}']['rps']:.2f}"
    )
    bad = sum(v["non_2xx"] for v in results.values() if isinstance(v, dict))
    print(f"non-2xx responses: {bad}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
