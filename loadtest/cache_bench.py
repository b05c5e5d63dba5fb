"""Cache benchmark, in one run:

1. latency through the gateway (a `switchyard serve` process in front of a simulated engine
   process, one client connection, sequential requests): no cache, cache miss, exact hit,
   semantic hit;
2. semantic lookup cost (embedding + index search, in process) with 1k / 10k / 100k entries in
   the searched partition (the worst case: every entry shares the system prompt and parameters);
3. an agent-swarm scenario with repetition (agents asking about the same things, often in other
   words): hit rate by kind and upstream tokens saved.

    python -m loadtest.cache_bench [--requests 300] [--sizes 1000,10000,100000] [--backends onnx,torch] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np

from gateway.keys import hash_key
from loadtest.overhead import free_port, wait_port, wrk

KEY = "sk-bench-cache"
SYSTEM = "You are a planning agent. Answer with the next tool call to make."
CITIES = [
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
    "Oslo",
    "Lima",
    "Cairo",
    "Delhi",
    "Sydney",
    "Toronto",
    "Chicago",
    "Boston",
    "Denver",
    "Seattle",
    "Dublin",
    "Vienna",
    "Prague",
    "Warsaw",
]
TEMPLATES = [  # paraphrases of one question, per city
    "What is the weather in {c} today?",
    "What's the weather like in {c} today?",
    "How is the weather in {c} today?",
]
TOPICS = [
    "reverse a list in Python",
    "undo the last git commit",
    "read a JSON file in Python",
    "check which ports are open on Linux",
    "find large files on Linux",
]
TOPIC_TEMPLATES = ["How do I {t}?", "How can I {t}?"]


def config(engine_port: int, port: int, semantic: bool, cache: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "health_check_interval_s": 5, "log_level": "warning"},
        "backends": [{"name": "sim", "kind": "vllm", "url": f"http://127.0.0.1:{engine_port}/v1"}],
        "models": [{"name": "bench", "deployments": [{"backend": "sim", "model": "sim"}]}],
        "teams": [{"name": "bench"}],
        "keys": [{"name": "bench", "team": "bench", "sha256": hash_key(KEY)}],
    }
    if cache:
        raw["cache"] = {"scope": "global", "models": {"bench": {"semantic": semantic}}}
    return raw


def start_gateway(tmp: Path, engine_port: int, semantic: bool, cache: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / f"gw-{port}.yaml"  # JSON is YAML
    conf.write_text(json.dumps(config(engine_port, port, semantic, cache)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, port


def body(text: str, **kw: Any) -> dict[str, Any]:
    return {
        "model": "bench",
        "temperature": 0,
        "max_tokens": 32,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        **kw,
    }


async def timed(
    s: aiohttp.ClientSession, url: str, payload: dict[str, Any], control: str | None = None
) -> tuple[float, str]:
    headers = {"Authorization": f"Bearer {KEY}", **({"x-switchyard-cache": control} if control else {})}
    t0 = time.perf_counter()
    async with s.post(url, json=payload, headers=headers) as r:
        await r.read()
        status = r.headers.get("x-switchyard-cache", "-")
    return time.perf_counter() - t0, status


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 3)


async def wait_semantic(port: int, timeout: float = 180.0) -> None:
    """Until the gateway's embedding model is loaded (lookups are skipped while it loads)."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.time() + timeout
    async with aiohttp.ClientSession() as s:
        while time.time() < deadline:
            await timed(s, url, body("How do I rename a file in bash?"), "refresh")
            # no-store: the paraphrase must never become an exact entry of its own
            if (await timed(s, url, body("How can I rename a file in bash?"), "no-store"))[1] == "hit-semantic":
                return
            await asyncio.sleep(0.5)
    raise RuntimeError("the semantic cache did not become ready")


async def latency(port_plain: int, port_cache: int, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        plain, cached = (
            f"http://127.0.0.1:{port_plain}/v1/chat/completions",
            f"http://127.0.0.1:{port_cache}/v1/chat/completions",
        )
        for _ in range(20):  # warm both (connections, model load)
            await timed(s, plain, body("warm up"))
            await timed(s, cached, body(f"warm up {random.random()}"))
        runs: dict[str, list[float]] = {"no_cache": [], "miss": [], "hit_exact": [], "hit_semantic": []}
        await timed(s, cached, body("How do I reverse a list in Python?"))
        for i in range(n):  # interleaved, so noise hits every kind alike
            runs["no_cache"].append((await timed(s, plain, body(f"Question number {i} about lists")))[0])
            dt, st = await timed(s, cached, body(f"Unrelated question number {i} about lists"))
            assert st == "miss", st
            runs["miss"].append(dt)
            dt, st = await timed(s, cached, body("How do I reverse a list in Python?"))
            assert st == "hit-exact", st
            runs["hit_exact"].append(dt)
            dt, st = await timed(s, cached, body("How can I reverse a Python list?"))
            assert st == "hit-semantic", st
            runs["hit_semantic"].append(dt)
        for k, xs in runs.items():
            out[k] = {"p50_ms": pct(xs, 0.5), "p90_ms": pct(xs, 0.9), "p99_ms": pct(xs, 0.99)}
    return out


def wrk_latency(tmp: Path, engine_port: int, plain_port: int, cached_port: int, seconds: int) -> dict[str, Any]:
    """One connection, one repeated request, measured by wrk (a C client: little client overhead):
    the engine directly, the gateway without a cache, the gateway answering exact hits."""
    script = tmp / "hit.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body("How do I reverse a list in Python?")))}\n'
        f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    path = "/v1/chat/completions"
    wrk(f"http://127.0.0.1:{cached_port}{path}", 1, 1, script)  # warm; the entry exists from then on
    return {
        "engine_direct": wrk(f"http://127.0.0.1:{engine_port}{path}", 1, seconds, script),
        "gateway_no_cache": wrk(f"http://127.0.0.1:{plain_port}{path}", 1, seconds, script),
        "gateway_hit_exact": wrk(f"http://127.0.0.1:{cached_port}{path}", 1, seconds, script),
    }


async def lookup_cost(sizes: list[int], n: int, backends: list[str] | None = None) -> dict[str, Any]:
    """Per size, per embedder backend (`onnx`, `torch`; interleaved text by text, so noise hits
    every backend alike): embedding, search and the whole lookup."""
    from gateway.cache.semantic import LocalEmbedder, SemanticCache

    backends = backends or ["auto"]
    caches = {b: SemanticCache(max(sizes) + 10, 32, LocalEmbedder(b)) for b in backends}
    for c in caches.values():
        await c.warm()
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {}
    have = 0
    texts = [f"How do I {t} on host number {i}?" for i in range(n) for t in TOPICS[:1]]
    try:
        for size in sizes:
            vecs = rng.standard_normal((size - have, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for c in caches.values():
                await c._run(_fill, c, vecs, have)
            have = size
            runs: dict[str, dict[str, list[float]]] = {
                b: {"emb": [], "search": [], "index_only": [], "total": []} for b in backends
            }
            for t in texts:
                for b, cache in caches.items():
                    r = runs[b]
                    t0 = time.perf_counter()
                    v = await cache.embed(t)
                    t1 = time.perf_counter()
                    await cache.lookup("bench", v, t, 0.9)
                    t2 = time.perf_counter()
                    await cache.query(t, "bench", 0.9)  # what a request pays: embed + search, one worker trip
                    t3 = time.perf_counter()
                    r["index_only"].append(await cache._run(_time_search, cache, v))
                    r["emb"].append(t1 - t0)
                    r["search"].append(t2 - t1)
                    r["total"].append(t3 - t2)
            for b, cache in caches.items():
                # 16 lookups at once: batched embedding
                t0 = time.perf_counter()
                await asyncio.gather(*(cache.embed(t) for t in texts[:16]))
                batch16 = (time.perf_counter() - t0) / 16
                r = runs[b]
                name = f"{size}/{cast(LocalEmbedder, cache.embedder).backend}" if len(backends) > 1 else str(size)
                out[name] = {
                    "embed_p50_ms": pct(r["emb"], 0.5),
                    "search_p50_ms": pct(r["search"], 0.5),
                    "index_search_p50_ms": pct(r["index_only"], 0.5),
                    "lookup_p50_ms": pct(r["total"], 0.5),
                    "lookup_p90_ms": pct(r["total"], 0.9),
                    "embed_per_text_batched16_ms": round(batch16 * 1000, 3),
                }
                print(f"  {name:>14} entries: {out[name]}", flush=True)
    finally:
        for c in caches.values():
            c.close()
    return out


def _time_search(cache: Any, vec: np.ndarray) -> float:
    """The index alone, on the worker thread: median of 5 back-to-back searches."""
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        cache._parts["bench"].index.search(vec, 4)
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[2]


def _fill(cache: Any, vecs: np.ndarray, start: int) -> None:
    """Bulk-load random unit vectors into one partition (runs on the cache's worker thread)."""
    cache._add("bench", "bench||global", vecs[0], f"filler {start}", b"{}", 3600)
    part = cache._parts["bench"]
    ids = np.arange(10**9 + start + 1, 10**9 + start + len(vecs), dtype=np.int64)
    part.index.add(ids, vecs[1:])
    for i in ids:
        part.entries[int(i)] = type(part.entries[next(iter(part.entries))])(b"{}", "filler", time.monotonic() + 3600)
    cache._count += len(ids)


async def scenario(port: int, engine_port: int, requests: int, agents: int) -> dict[str, Any]:
    rng = random.Random(7)
    questions = [(t, c) for c in CITIES for t in TEMPLATES] + [(t, topic) for topic in TOPICS for t in TOPIC_TEMPLATES]
    weights = [1 / (1 + i // 3) ** 1.1 for i in range(len(questions))]  # Zipf-like over subjects
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    counts: dict[str, int] = {}
    queue = [rng.choices(questions, weights)[0] for _ in range(requests)]

    async def agent(s: aiohttp.ClientSession) -> None:
        while queue:
            template, subject = queue.pop()
            text = template.format(c=subject, t=subject)
            _, st = await timed(s, url, body(text))
            counts[st] = counts.get(st, 0) + 1

    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{engine_port}/sim/reset"):
            pass
        await asyncio.gather(*(agent(s) for _ in range(agents)))
        async with s.get(f"http://127.0.0.1:{engine_port}/sim/stats") as r:
            stats = await r.json()
        async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = await r.text()
    saved = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("switchyard_cache_saved_tokens_total{")
    )
    upstream = stats["prompt_tokens"] + stats["completion_tokens"]
    return {
        "requests": requests,
        "agents": agents,
        "by_status": counts,
        "hit_rate": round((counts.get("hit-exact", 0) + counts.get("hit-semantic", 0)) / requests, 3),
        "upstream_requests": stats["requests_total"],
        "upstream_tokens": upstream,
        "saved_tokens": int(saved),
        "saved_share": round(saved / (saved + upstream), 3) if saved + upstream else 0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    engine_port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine", "--port", str(engine_port), "--output-tokens", "24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = [engine]
    try:
        wait_port(engine_port)
        plain, plain_port = start_gateway(tmp, engine_port, semantic=False, cache=False)
        cached, cached_port = start_gateway(tmp, engine_port, semantic=True, cache=True)
        procs += [plain, cached]
        await wait_semantic(cached_port)
        backends = args.backends.split(",") if args.backends else None
        result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"}
        if args.lookup_only:
            result["lookup"] = await lookup_cost([int(x) for x in args.sizes.split(",")], args.n, backends)
            return result
        print("latency through the gateway ...", flush=True)
        result["latency"] = await latency(plain_port, cached_port, args.n)
        print(json.dumps(result["latency"]), flush=True)
        if shutil.which("wrk"):
            result["wrk_c1"] = wrk_latency(tmp, engine_port, plain_port, cached_port, args.wrk_seconds)
            print(json.dumps(result["wrk_c1"]), flush=True)
        print("agent-swarm scenario ...", flush=True)
        scen_gw, scen_port = start_gateway(tmp, engine_port, semantic=True, cache=True)
        procs.append(scen_gw)
        await wait_semantic(scen_port)
        result["scenario"] = await scenario(scen_port, engine_port, args.requests, args.agents)
        print(json.dumps(result["scenario"]), flush=True)
        print("semantic lookup cost ...", flush=True)
        result["lookup"] = await lookup_cost([int(x) for x in args.sizes.split(",")], args.n, backends)
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)  # a gateway still loading the embedding model finishes that first
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="samples per latency kind / lookup size")
    ap.add_argument("--requests", type=int, default=300, help="scenario requests")
    ap.add_argument("--agents", type=int, default=8, help="scenario concurrent agents")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--lookup-only", action="store_true", help="only the semantic lookup cost (in process)")
    ap.add_argument(
        "--backends",
        help="embedders compared in the lookup cost, interleaved, e.g. onnx,torch "
        "(default: the gateway's choice, onnx when onnxruntime is installed)",
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
