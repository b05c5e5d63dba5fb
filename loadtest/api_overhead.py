"""What the Responses / Messages APIs cost over chat completions (issue #14): translation vs chat
pass-through vs native pass-through, measured in one run.

    python -m loadtest.api_overhead [--duration 4] [--reps 3] [--connections 50] [--streams 300] [--json out.json]

The upstream is nginx answering canned bodies (so it costs next to nothing): a chat completion,
and the same answer as a Responses object and a Messages object (what an engine that serves those
APIs itself would send), whole or as SSE streams of 16 text chunks. The gateway runs as
`switchyard serve` in its own process (logging every request to /dev/null), as deployed. Models:
`bench` on a chat-only backend (Responses / Messages translated), `bench-native` on a backend that
serves both APIs (passed through).

1. wrk (-t1), non-streamed: p50 at 1 connection (added = minus nginx directly) and req/s at
   `--connections`, for chat, Responses and Messages, translated and native; `--reps` runs of each,
   paths interleaved, medians reported.
2. TTFT with `--streams` concurrent streams (an aiohttp client in this process, uvloop): time to the
   first text delta, p50 / p99, per path, `--rounds` rounds each, paths interleaved. nginx sends a
   whole canned stream at once, so this is the gateway's time to the first event under that load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.apis.messages.stream import MessagesStream
from gateway.apis.responses.response import skeleton
from gateway.apis.responses.stream import ResponsesStream
from gateway.keys import hash_key
from loadtest.overhead import free_port, wait_port
from loadtest.overhead import wrk as wrk_once

KEY = "sk-bench"
TEXT = "Hi there, how can I help you today with your code?"
USAGE = {"prompt_tokens": 9, "completion_tokens": 16, "total_tokens": 25}
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {  # path -> (endpoint, body without model)
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}),
    "responses": ("/v1/responses", {"input": "Say hi.", "max_output_tokens": 16}),
    "messages": ("/v1/messages", {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}),
}
# the first text delta of each API's stream
FIRST_TEXT = {"chat": b'"delta":{"content"', "responses": b"output_text.delta", "messages": b"text_delta"}
PATHS = [  # (label, api, model)
    ("chat pass-through", "chat", "bench"),
    ("responses translated", "responses", "bench"),
    ("messages translated", "messages", "bench"),
    ("responses native", "responses", "bench-native"),
    ("messages native", "messages", "bench-native"),
]


def _chunks() -> list[dict[str, Any]]:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "up"}
    words = [w + " " for w in TEXT.split()][:-1] + [TEXT.split()[-1]]
    out = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**head, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    out.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**head, "choices": [], "usage": USAGE})
    return out


def canned() -> dict[str, str]:
    """Location -> body: chat / Responses / Messages answers, whole and streamed (the native ones
    rendered by the gateway's own translators, i.e. the real wire formats)."""
    chat = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    response = skeleton("resp_bench", "up", {"store": True})
    response.update(
        status="completed",
        output=[
            {
                "id": "msg_bench",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
            }
        ],
        usage={"input_tokens": 9, "output_tokens": 16, "total_tokens": 25},
    )
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "up",
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 16},
    }
    chunks = _chunks()
    chat_sse = "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks) + "data: [DONE]\n\n"
    rs = ResponsesStream(skeleton("resp_bench", "up", {"store": True}))
    ms = MessagesStream("msg_bench", "up", 9, lambda n: n, [])
    native_sse = {}
    for name, st in (("responses", rs), ("messages", ms)):
        native_sse[name] = (st.start() + b"".join(st.feed(c) for c in chunks) + st.finish(None)).decode()
    return {
        "/json/v1/chat/completions": json.dumps(chat),
        "/json/v1/responses": json.dumps(response),
        "/json/v1/messages": json.dumps(message),
        "/sse/v1/chat/completions": chat_sse,
        "/sse/v1/responses": native_sse["responses"],
        "/sse/v1/messages": native_sse["messages"],
    }


def start_nginx(tmp: Path, port: int) -> subprocess.Popen:
    """nginx answering every POST with a canned body read from a file (the streams are longer than
    an nginx string may be): the POST is answered 405 by `return`, turned into an internal GET of
    the file by error_page."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    files = tmp / "canned"
    (files / "json").mkdir(parents=True, exist_ok=True)
    (files / "sse").mkdir(exist_ok=True)
    locations = []
    for i, (loc, body) in enumerate(canned().items()):
        kind = "sse" if loc.startswith("/sse/") else "json"
        (files / kind / f"b{i}").write_text(body)
        locations.append(f"location = {loc} {{ error_page 405 =200 /canned-{kind}/b{i}; return 405; }}")
    for prefix in ("/json", "/sse"):
        locations.append(f"location = {prefix}/v1/models {{ default_type application/json; return 200 '{{}}'; }}")
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000; etag off;
  server {{ listen 127.0.0.1:{port};
    location /canned-json/ {{ internal; alias {files}/json/; default_type application/json; }}
    location /canned-sse/ {{ internal; alias {files}/sse/; default_type text/event-stream; }}
    {chr(10).join(locations)}
  }}
}}""")
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)


def start_gateway(tmp: Path, port: int, up: int) -> subprocess.Popen:
    backends, models = [], []
    for name, prefix, native in (
        ("json", "json", "[]"),
        ("json-native", "json", '["responses", "messages"]'),
        ("sse", "sse", "[]"),
        ("sse-native", "sse", '["responses", "messages"]'),
    ):
        backends.append(
            f'[[backends]]\nname = "{name}"\nkind = "vllm"\nurl = "http://127.0.0.1:{up}/{prefix}/v1"\n'
            f"native_apis = {native}\n"
        )
    for alias, backend in (("bench", "json"), ("bench-native", "json-native")):
        models.append(f'[[models]]\nname = "{alias}"\ndeployments = [{{ backend = "{backend}", model = "up" }}]\n')
    for alias, backend in (("bench-sse", "sse"), ("bench-sse-native", "sse-native")):
        models.append(f'[[models]]\nname = "{alias}"\ndeployments = [{{ backend = "{backend}", model = "up" }}]\n')
    conf = tmp / "gateway.toml"
    conf.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "info"\n'
        + "".join(backends)
        + "".join(models)
        + f'[[teams]]\nname = "bench"\n[[keys]]\nname = "bench"\nteam = "bench"\nsha256 = "{hash_key(KEY)}"\n'
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    """wrk, tried again when it fails to run (a shared machine can refuse a burst of connections)."""
    for attempt in range(3):
        try:
            return wrk_once(url, connections, duration, script)
        except subprocess.CalledProcessError as e:
            print(f"wrk failed ({url}, -c{connections}): {(e.stdout or '')[-300:]} {(e.stderr or '')[-300:]}")
            if attempt == 2:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def body_of(api: str, model: str, stream: bool = False) -> dict[str, Any]:
    body = {"model": model, **REQUESTS[api][1]}
    if stream:
        body["stream"] = True
    return body


def wrk_script(tmp: Path, name: str, body: dict[str, Any]) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
        f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    return script


async def stream_round(base: str, api: str, model: str, n: int) -> list[tuple[float, float]]:
    """n concurrent streams; per stream (seconds to the first text delta, seconds to the end)."""
    url = base + REQUESTS[api][0]
    body = orjson.dumps(body_of(api, model, stream=True))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    marker = FIRST_TEXT[api]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[float, float]:
            t0 = time.perf_counter()
            first = None
            async with session.post(url, data=body, headers=headers) as r:
                assert r.status == 200, (api, model, r.status, await r.text())
                async for chunk in r.content.iter_any():
                    if first is None and marker in chunk:
                        first = time.perf_counter() - t0
            return (first if first is not None else float("nan")), time.perf_counter() - t0

        return await asyncio.gather(*(one() for _ in range(n)))


def micro(n: int = 3000) -> dict[str, float]:
    """CPU per request of the translation itself, in this process (no network; robust on a busy
    machine): microseconds for parse + chat body + answer + settle, whole and streamed, beside what
    the chat pass-through does with the same answer (usage read / SSE relay)."""
    from gateway.apis import build_adapters
    from gateway.sse import SSERelay, _event_json, _split_events, usage_of_body

    bodies = canned()
    whole, stream = bodies["/json/v1/chat/completions"].encode(), bodies["/sse/v1/chat/completions"].encode()
    adapters = build_adapters()

    def clock(fn: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    out = {
        "chat_whole_us": clock(lambda: usage_of_body(whole)),
        "chat_stream_us": clock(lambda: SSERelay(False).feed(stream)),
    }

    async def translated(adapter: Any, api: str, streamed: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            tr = await adapter.parse(body_of(api, "bench", stream=streamed), {}, "owner")
            orjson.dumps(tr.chat_payload)
            if streamed:
                st = tr.stream_translator()
                parts = [st.start()]
                for event in _split_events(stream):
                    obj = _event_json(event)
                    if isinstance(obj, dict):
                        parts.append(st.feed(obj))
                parts.append(st.finish(None))
            else:
                tr.body(whole, 200)
            await tr.settle("d")
        return (time.perf_counter() - t0) / n * 1e6

    for api in ("responses", "messages"):
        for streamed in (False, True):
            key = f"{api}_{'stream' if streamed else 'whole'}_us"
            out[key] = asyncio.run(translated(adapters[api], api, streamed))
    return out


def pct(values: list[float], p: float) -> float:
    xs = sorted(v for v in values if v == v)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="wrk runs per path and connection count")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --streams concurrent streams per path")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk") or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        sys.exit("wrk and nginx are needed: apt-get install -y wrk nginx-light")
    results: dict[str, Any] = {"load_avg_start": os.getloadavg()[0], "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up, gw = free_port(), free_port()
        procs = [start_nginx(tmp, up), start_gateway(tmp, gw, up)]
        results["nginx_restarts"] = 0

        def upstream_alive() -> None:
            """Another job on a shared machine may stop every nginx: start ours again (stateless)."""
            if procs[0].poll() is not None:
                procs[0] = start_nginx(tmp, up)
                wait_port(up)
                results["nginx_restarts"] += 1

        try:
            wait_port(up)
            wait_port(gw)
            time.sleep(1.0)
            base = f"http://127.0.0.1:{gw}"
            direct = wrk_script(tmp, "direct", body_of("chat", "up"))
            scripts = {
                label: wrk_script(tmp, f"p{i}", body_of(api, model)) for i, (label, api, model) in enumerate(PATHS)
            }
            for label, api, _ in PATHS:  # warm-up
                wrk(base + REQUESTS[api][0], 10, 2, scripts[label])
            runs: dict[str, list[dict[str, float]]] = {}
            for rep in range(args.reps):  # interleaved, medians: a shared machine drifts
                for conns in (1, args.connections):
                    url = f"http://127.0.0.1:{up}/json/v1/chat/completions"
                    upstream_alive()
                    runs.setdefault(f"direct_c{conns}", []).append(wrk(url, conns, args.duration, direct))
                    order = PATHS[rep % len(PATHS) :] + PATHS[: rep % len(PATHS)]
                    for label, api, _ in order:
                        upstream_alive()
                        run = wrk(base + REQUESTS[api][0], conns, args.duration, scripts[label])
                        runs.setdefault(f"{label}_c{conns}", []).append(run)
            for key, rs in runs.items():
                results[key] = {m: statistics.median(r[m] for r in rs) for m in rs[0]} | {"runs": rs}
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            ttft: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in PATHS}
            for _ in range(args.rounds):
                for label, api, model in PATHS:
                    sse_model = "bench-sse-native" if model.endswith("native") else "bench-sse"
                    upstream_alive()
                    ttft[label] += asyncio.run(stream_round(base, api, sse_model, args.streams))
            for label, samples in ttft.items():
                results[f"{label}_streams"] = {
                    "ttft_p50_ms": pct([s[0] for s in samples], 50),
                    "ttft_p99_ms": pct([s[0] for s in samples], 99),
                    "total_p50_ms": pct([s[1] for s in samples], 50),
                    "n": len(samples),
                }
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    results["micro"] = micro()
    results["load_avg_end"] = os.getloadavg()[0]
    report(results, args.connections, args.streams)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict[str, Any], conns: int, streams: int) -> None:
    direct = r["direct_c1"]["p50_ms"]
    chat_added = r["chat pass-through_c1"]["p50_ms"] - direct
    chat_rps = r[f"chat pass-through_c{conns}"]["rps"]
    chat_ttft = r["chat pass-through_streams"]["ttft_p50_ms"]
    print(f"machine: {r['cores']} cores, load average {r['load_avg_start']:.2f} -> {r['load_avg_end']:.2f}")
    print(f"nginx directly: p50 {direct:.3f} ms, {r[f'direct_c{conns}']['rps']:.0f} req/s")
    print(
        f"{'path':22}{'p50@1 ms':>10}{'added ms':>10}{'vs chat':>9}{f'req/s@{conns}':>12}{'chat/this':>11}"
        f"{f'TTFT p50@{streams}':>16}{'p99':>9}{'vs chat':>9}"
    )
    for label, _, _ in PATHS:
        c1, cn, st = r[f"{label}_c1"], r[f"{label}_c{conns}"], r[f"{label}_streams"]
        added = c1["p50_ms"] - direct
        print(
            f"{label:22}{c1['p50_ms']:10.3f}{added:10.3f}{added / chat_added:9.2f}{cn['rps']:12.0f}"
            f"{chat_rps / cn['rps']:11.2f}{st['ttft_p50_ms']:16.1f}{st['ttft_p99_ms']:9.1f}"
            f"{st['ttft_p50_ms'] / chat_ttft:9.2f}"
        )
    m = r["micro"]
    print(
        "CPU per request in process (us), whole / stream of 16 chunks: "
        f"chat pass-through {m['chat_whole_us']:.0f} / {m['chat_stream_us']:.0f}, "
        f"responses translated {m['responses_whole_us']:.0f} / {m['responses_stream_us']:.0f}, "
        f"messages translated {m['messages_whole_us']:.0f} / {m['messages_stream_us']:.0f}"
    )
    bad = sum(v["non_2xx"] for v in r.values() if isinstance(v, dict) and "non_2xx" in v)
    print(f"non-2xx responses: {bad}   (target: translation within 1.2x of chat pass-through)")


if __name__ == "__main__":
    main()
