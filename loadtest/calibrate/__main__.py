"""`python -m loadtest.calibrate` (`make bench-real`): fit the simulator to real vLLM CPU engines and
run the same agent swarm through the gateway on both, once per routing policy.

    python -m loadtest.calibrate [--agents 6] [--turns 4] [--answer-tokens 24] [--max-num-seqs 8] [--repeat 2]
        [--policies round-robin,least-active,prefix-aware,session-affinity] [--out calibration.json]
    python -m loadtest.calibrate --from calibration.json     (simulated side only, the saved fit and
                                                              real figures: for work on the simulator)

Two vLLM processes (~5 GiB each), each pinned to one CPU core, are started, measured (loadtest/
calibrate/fit.py), run the swarm per policy, and are stopped; then two simulated engines with the
fitted cost model run the same swarm. Prints the side-by-side table and the verdict (table.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from gateway.config import parse_config
from gateway.keys import hash_key
from gateway.logs import configure_logging
from gateway.server import start_gateway
from loadtest.calibrate import agents, fit, table
from loadtest.engine import start_engine
from loadtest.real_engines import MODEL, EnginesMissing, engine_paths, start_vllm

KEY = "sk-calibration"
POLICIES = ("round-robin", "least-active", "prefix-aware", "session-affinity")


def gateway_config(urls: list[str], policy: str) -> Any:
    raw = {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 2, "log_level": "warning"},
        "backends": [{"name": f"e{i}", "kind": "vllm", "url": u} for i, u in enumerate(urls)],
        "models": [
            {
                "name": MODEL,
                "policy": policy,
                "deployments": [{"backend": f"e{i}", "model": MODEL} for i in range(len(urls))],
            }
        ],
        "teams": [{"name": "swarm"}],
        "keys": [{"name": "swarm", "team": "swarm", "sha256": hash_key(KEY), "models": ["*"]}],
    }
    return parse_config(json.dumps(raw), fmt="yaml", env={})


async def engine_counters(bases: list[str]) -> tuple[float, float, list[float]]:
    """(prefix-cache hit tokens, queried tokens, requests finished per engine) from the engines'
    vllm:prefix_cache_* and vllm:request_success_total counters."""
    hits = queries = 0.0
    done: list[float] = []
    async with aiohttp.ClientSession() as s:
        for base in bases:
            done.append(0.0)
            async with s.get(base + "/metrics") as r:
                for line in (await r.text()).splitlines():
                    value = line.rsplit(" ", 1)[-1]
                    if line.startswith("vllm:prefix_cache_hits_total"):
                        hits += float(value)
                    elif line.startswith("vllm:prefix_cache_queries_total"):
                        queries += float(value)
                    elif line.startswith("vllm:request_success_total"):
                        done[-1] += float(value)
    return hits, queries, done


async def run_policies(
    bases: list[str], policies: list[str], w: agents.Workload, side: str, repeat: int
) -> dict[str, table.Row]:
    """Each policy `repeat` times, the order rotated every round (slow drifts of a shared machine's
    load spread over all policies); figures over all of a policy's calls."""
    recs = {p: agents.Record() for p in policies}
    cache = {p: [0.0, 0.0] for p in policies}
    per_engine = {p: [0.0] * len(bases) for p in policies}
    for rnd in range(repeat):
        for policy in policies[rnd % len(policies) :] + policies[: rnd % len(policies)]:
            gw = await start_gateway(gateway_config([b + "/v1" for b in bases], policy), port=0)
            client = AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=600)
            try:
                await asyncio.sleep(0.5)  # first health probe and load scrape
                h0, q0, d0 = await engine_counters(bases)
                tag = f"{side}-{policy}-{uuid.uuid4().hex[:6]}"
                rec = await agents.run_swarm(client, MODEL, tag, w, sessions=f"{policy}-round{rnd}")
                h1, q1, d1 = await engine_counters(bases)
            finally:
                await client.close()
                await gw.stop()
            recs[policy].merge(rec)
            cache[policy][0] += h1 - h0
            cache[policy][1] += q1 - q0
            per_engine[policy] = [t + b - a for t, a, b in zip(per_engine[policy], d0, d1, strict=True)]
            print(f"calibrate: {side:4s} {policy:17s} round {rnd + 1}: {rec.summary()}", file=sys.stderr)
    return {p: table.Row.of(recs[p], cache[p][0], cache[p][1], runs=repeat, per_engine=per_engine[p]) for p in policies}


async def real_side(args: argparse.Namespace, w: agents.Workload) -> tuple[fit.Fit, dict[str, table.Row]]:
    paths = engine_paths().require("vllm")
    common = ("--max-num-seqs", str(args.max_num_seqs))
    engines = [start_vllm(paths, *common, env={"VLLM_CPU_OMP_THREADS_BIND": str(i)}) for i in range(2)]
    try:
        for e in engines:
            e.wait_ready()
        print(
            f"calibrate: two vLLM engines ready ({[round(e.ready_after_s or 0) for e in engines]} s)", file=sys.stderr
        )
        fitted = await fit.fit([e.base for e in engines], MODEL, args.max_num_seqs, w)
        print(f"calibrate: fit {fitted.as_dict()}", file=sys.stderr)
        rows = await run_policies([e.base for e in engines], args.policies, w, "real", args.repeat)
    finally:
        for e in engines:
            e.stop()
    return fitted, rows


async def sim_side(fitted: fit.Fit, policies: list[str], w: agents.Workload, repeat: int) -> dict[str, table.Row]:
    engines = [await start_engine(fitted.engine_config(MODEL, seed=i)) for i in range(2)]
    try:
        return await run_policies([e.base for e in engines], policies, w, "sim", repeat)
    finally:
        for e in engines:
            await e.stop()


def load_saved(path: Path) -> tuple[fit.Fit, dict[str, table.Row], agents.Workload]:
    saved = json.loads(path.read_text())
    f = saved["fit"]
    f["decode_step_s"] = {int(k): v for k, v in f["decode_step_s"].items()}
    return fit.Fit(**f), {p: table.Row(**r) for p, r in saved["real"].items()}, agents.Workload(**saved["workload"])


async def main_async(args: argparse.Namespace) -> int:
    configure_logging("warning", "console")
    if args.from_:
        fitted, real, w = load_saved(args.from_)
        args.policies = [p for p in args.policies if p in real]
    else:
        w = agents.Workload(args.agents, args.turns, args.answer_tokens)
        try:
            fitted, real = await real_side(args, w)
        except EnginesMissing as e:
            print(f"calibrate: {e}", file=sys.stderr)
            return 2
    sim = await sim_side(fitted, args.policies, w, args.repeat)
    print(table.markdown(real, sim))
    verdict = table.verdict(real, sim)
    print(json.dumps(verdict, indent=2))
    if args.out:
        out = {
            "workload": dataclasses.asdict(w),
            "fit": fitted.as_dict(),
            "sim_config": fitted.engine_config(MODEL).to_dict(),
            "real": {p: dataclasses.asdict(r) for p, r in real.items()},
            "sim": {p: dataclasses.asdict(r) for p, r in sim.items()},
            "verdict": verdict,
        }
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=6)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--answer-tokens", type=int, default=24)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="runs per policy, interleaved")
    ap.add_argument("--policies", type=lambda s: s.split(","), default=list(POLICIES))
    ap.add_argument("--out", type=Path, default=Path("calibration.json"))
    ap.add_argument("--from", dest="from_", type=Path, help="a saved run: the simulated side only")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
