"""Routing benchmark (issue 4): policies compared on one machine in one run, SIMULATED engines.

    python -m loadtest.routing_bench agents  [--agents 100] [--turns 5] [--policies round-robin,...]
    python -m loadtest.routing_bench burst   [--agents 64]

`agents`: N agents talk to one alias over 4 simulated vLLM engines (realistic cost model: prefill
50 us/token, decode step 10 ms + 0.2 ms/seq, 64 seqs, 8192 KV blocks, a prefix cache of 8192
blocks = 131k tokens each). Every agent shares a ~600-token system prompt and a tool list, brings
its own ~1500-3000-token context in the first turn (a RAG document: unique to the agent), then
talks for several turns (each turn = previous prompt + answer + a new user message), streaming,
with think time between turns. Reported per policy: the engines' prefix-cache hit rate (tokens
found cached / prompt tokens), client-side time to first token and turn latency (p50 / p95).

`burst`: 2 local vLLM engines (16 seqs each; backends max_concurrency `--local-cap`) and a remote paid API
(300 ms latency, $0.15 / $0.60 per M tokens). First a few agents alone (unloaded turn latency),
then a burst of 2x the local capacity (default 4 x local cap agents), with `local-first` (spill to remote) and with least-active
over the local engines only (queue). Reports p95 turn latency vs unloaded, spills and remote cost.

Everything (engines, gateway, agents) runs in this one process on one event loop, so absolute
numbers include the machine's noise; compare the policies' ratios within one run. `--time-scale`
(default 0.5) runs the simulated engines slower than real time so their costs, not this machine's
CPU, dominate; latencies are reported in simulated seconds (wall x time scale), think time and the
ramp are simulated too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import aiohttp
import orjson

from gateway.keys import hash_key
from gateway.logs import configure_logging
from gateway.server import start_gateway
from loadtest.engine import EngineConfig, start_engine
from tests.conftest import to_config

KEY = "sk-routing-bench"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def text(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens * 4 // 6))  # ~4 bytes per token


ENGINE = dict(
    prefill_s_per_token=0.00005,
    decode_base_s=0.01,
    decode_per_seq_s=0.0002,
    max_num_seqs=64,
    kv_blocks=8192,
    prefix_cache_blocks=8192,
    output_tokens=24,
    output_tokens_max=48,
)
SYSTEM = "You are a meticulous software agent. " + text(random.Random(0), 600)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": n,
            "description": "tool " + n,
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
    for n in ("read", "grep", "run")
]


def raw_config(backends: list[dict[str, Any]], models: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "log_level": "error", "health_check_interval_s": 2},
        "load_signals": {"interval_s": 0.25, "stale_after_s": 1.0},
        "backends": backends,
        "models": models,
        "teams": [{"name": "bench"}],
        "keys": [{"name": "bench", "team": "bench", "sha256": hash_key(KEY), "models": ["*"]}],
    }


async def turn(http: aiohttp.ClientSession, url: str, body: dict[str, Any], session: str) -> tuple[float, float, str]:
    """One streamed call: (time to first content, whole turn, answer text). Raw SSE over aiohttp
    (the openai SDK's per-chunk parsing would cost more CPU than the gateway on this machine)."""
    t0 = time.perf_counter()
    ttft = None
    parts: list[str] = []
    buf = b""
    async with http.post(
        url,
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", "x-switchyard-session": session},
    ) as resp:
        assert resp.status == 200, await resp.text()
        async for data in resp.content.iter_any():
            buf += data
            *events, buf = buf.split(b"\n\n")
            for ev in events:
                if not ev.startswith(b"data: {"):
                    continue
                choices = orjson.loads(ev[6:]).get("choices") or []
                piece = choices[0].get("delta", {}).get("content") if choices else None
                if piece:
                    ttft = ttft or time.perf_counter() - t0
                    parts.append(piece)
    end = time.perf_counter() - t0
    return ttft or end, end, "".join(parts)


async def agent(
    http: aiohttp.ClientSession,
    url: str,
    model: str,
    i: int,
    turns: int,
    think: tuple[float, float],
    out: dict[str, list[float]],
    context_tokens: tuple[int, int] = (1500, 3000),
    scale: float = 1.0,
) -> None:
    """`scale`: the engines' time_scale; latencies are recorded in simulated seconds (wall x scale)
    and think time is simulated too (wall = think / scale)."""
    rng = random.Random(1000 + i)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Document {i}: " + text(rng, rng.randint(*context_tokens))},
    ]
    for _ in range(turns):
        body = {
            "model": model,
            "messages": messages,
            "tools": TOOLS,
            "tool_choice": "none",
            "max_tokens": 48,
            "stream": True,
        }
        ttft, whole, answer = await turn(http, url, body, f"agent-{i}")
        out["ttft"].append(ttft * scale)
        out["turn"].append(whole * scale)
        messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": text(rng, rng.randint(20, 80))})
        await asyncio.sleep(rng.uniform(*think) / scale)


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else (xs[0] if xs else float("nan"))


async def run_agents(
    policy: str, agents: int, turns: int, ramp_s: float, options: dict[str, Any], scale: float
) -> dict[str, Any]:
    engines = [await start_engine(EngineConfig(seed=i, time_scale=scale, **ENGINE), port=0) for i in range(4)]  # type: ignore[arg-type]
    backends = [{"name": f"gpu-{i}", "kind": "vllm", "url": e.url} for i, e in enumerate(engines)]
    model = {
        "name": "llama",
        "policy": policy,
        "policy_options": options,
        "deployments": [{"backend": b["name"], "model": "llama-8b"} for b in backends],
    }
    gw = await start_gateway(to_config(raw_config(backends, [model])), port=0)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = gw.url + "/chat/completions"
    out: dict[str, list[float]] = {"ttft": [], "turn": []}

    async def delayed(i: int) -> None:
        await asyncio.sleep(ramp_s * i / agents / scale)
        await agent(http, url, "llama", i, turns, (0.5, 1.5), out, scale=scale)

    t0 = time.perf_counter()
    await asyncio.gather(*(delayed(i) for i in range(agents)))
    wall = time.perf_counter() - t0
    hits = sum(e.stats.prefix_hits_tokens for e in engines)
    queries = sum(e.stats.prefix_queries_tokens for e in engines)
    share = [e.stats.requests_total for e in engines]
    await http.close()
    await gw.stop()
    for e in engines:
        await e.stop()
    return {
        "policy": policy,
        "hit_rate": hits / queries,
        "ttft_p50": pct(out["ttft"], 50),
        "ttft_p95": pct(out["ttft"], 95),
        "turn_p50": pct(out["turn"], 50),
        "turn_p95": pct(out["turn"], 95),
        "requests": share,
        "wall_s": wall,
    }


async def run_burst(policy: str, agents: int, turns: int, spill: bool, scale: float, cap: int = 16) -> dict[str, Any]:
    local_engine = dict(ENGINE, max_num_seqs=16)
    locals_ = [
        await start_engine(EngineConfig(seed=i, time_scale=scale, **local_engine), port=0)  # type: ignore[arg-type]
        for i in range(2)
    ]
    remote = await start_engine(
        EngineConfig(
            profile="remote",
            seed=9,
            time_scale=scale,
            remote_latency_s=0.3,
            itl_s=0.005,
            output_tokens=24,
            output_tokens_max=48,
            price_per_input_token=0.15e-6,
            price_per_output_token=0.60e-6,
        ),
        port=0,
    )
    # With a remote to spill to, the local backends are capped at the engines' batch size (spill at
    # once); local only, the engines queue what is over (a cap would answer 503 instead).
    backends = [
        {"name": f"gpu-{i}", "kind": "vllm", "url": e.url, **({"max_concurrency": cap} if spill else {})}
        for i, e in enumerate(locals_)
    ]
    backends.append({"name": "api", "kind": "openai", "url": remote.url})
    deps = [{"backend": f"gpu-{i}", "model": "llama-8b"} for i in range(2)]
    if spill:
        deps.append({"backend": "api", "model": "llama-8b"})
    gw = await start_gateway(
        to_config(raw_config(backends, [{"name": "llama", "policy": policy, "deployments": deps}])), port=0
    )
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = gw.url + "/chat/completions"
    out: dict[str, list[float]] = {"ttft": [], "turn": []}
    await asyncio.gather(
        *(agent(http, url, "llama", i, turns, (0.0, 0.2), out, (300, 800), scale) for i in range(agents))
    )
    spills = gw.gateway.metrics.spillover.labels("llama")._value.get()
    result = {
        "policy": policy + (" (spill to remote)" if spill else " (local only)"),
        "agents": agents,
        "turn_p50": pct(out["turn"], 50),
        "turn_p95": pct(out["turn"], 95),
        "ttft_p95": pct(out["ttft"], 95),
        "spills": spills,
        "remote_requests": remote.stats.requests_total,
        "remote_cost_usd": remote.stats.cost_usd,
    }
    await http.close()
    await gw.stop()
    for e in [*locals_, remote]:
        await e.stop()
    return result


def show(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    configure_logging("warning", "console")
    if args.scenario == "agents":
        rows = []
        for p in args.policies.split(","):
            name, _, opts = p.partition(":")
            rows.append(
                await run_agents(
                    name, args.agents, args.turns, args.ramp_s, orjson.loads(opts) if opts else {}, args.time_scale
                )
            )
            show(rows[-1:])
        base = rows[0]
        for r in rows[1:]:
            print(
                f"{r['policy']}: hit rate x{r['hit_rate'] / base['hit_rate']:.2f}, "
                f"p50 TTFT {100 * (r['ttft_p50'] / base['ttft_p50'] - 1):+.0f}% vs {base['policy']}"
            )
    else:
        quiet = await run_burst("local-first", args.unloaded_agents, args.turns, True, args.time_scale, args.local_cap)
        show([quiet])
        rows = []
        for policy, spill in (("local-first", True), ("least-active", False)):
            rows.append(await run_burst(policy, args.agents, args.turns, spill, args.time_scale, args.local_cap))
            show(rows[-1:])
        for r in rows:
            print(
                f"{r['policy']}: p95 turn latency {r['turn_p95'] / quiet['turn_p95']:.2f}x unloaded, "
                f"remote cost ${r['remote_cost_usd']:.4f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description="Routing policy benchmark over SIMULATED engines")
    p.add_argument("scenario", choices=["agents", "burst"])
    p.add_argument("--agents", type=int, default=None)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--ramp-s", type=float, default=5.0)
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.5,
        help="engines' time_scale (< 1: slower than real, so engine costs dominate this machine's CPU noise)",
    )
    p.add_argument("--unloaded-agents", type=int, default=4)
    p.add_argument(
        "--local-cap", type=int, default=16, help="burst: max_concurrency of each local backend (the engines batch 16)"
    )
    p.add_argument("--policies", default="round-robin,least-active,session-affinity,prefix-aware")
    args = p.parse_args()
    args.agents = args.agents or (100 if args.scenario == "agents" else 4 * args.local_cap)  # burst: 2x local capacity
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
