"""Prefix-aware and session-affinity routing raise real engines' prompt-cache reuse over round-robin.

Two llama.cpp servers (4 slots each keep their last prompt's KV) behind the gateway; a small agent
swarm (3 agents x 4 rounds; a shared system prompt, then each agent's own ~250-token briefing and its
tool results, the whole conversation sent every turn) runs once per policy. The figure is the engines' own: llamacpp:prompt_tokens_cached_total
over all prompt tokens, summed over both servers. Round-robin sends an agent's next turn to the
other server, where only the shared system prompt can be cached; prefix-aware and session-affinity
keep a conversation on the server that holds it. Least-active is measured and reported, not judged."""

from __future__ import annotations

import asyncio
import time
import uuid

from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, real_config

AGENTS, ROUNDS, ANSWER_TOKENS = 3, 4, 16
SYSTEM = "You are a careful operations assistant for a railway freight company. " + " ".join(
    f"Rule {i}: confirm the seal number, log the weight, report delays to the dispatcher." for i in range(6)
)


def _briefing(a: int) -> str:
    """Agent a's own long context (a task file, ~250 tokens): what makes its conversation worth caching."""
    return f"Agent {a}, here is your yard log. " + " ".join(
        f"Wagon {a}-{w} arrived at platform {(a * 7 + w) % 11} with {10 + w * a % 17} tonnes of grain, seal {a * 1000 + w * 37}."
        for w in range(9)
    )


def _tool_result(a: int, t: int) -> str:
    return f"Tool result for agent {a}, step {t}: " + " ".join(
        f"wagon {a}-{w} weighs {20 + (w * t) % 9} t, {'late' if (w + t) % 3 else 'on time'}." for w in range(6)
    )


async def _swarm(client, run: str) -> float:
    """Run the agents in rounds (every agent's next turn at once, then the next round); wall seconds.
    Each turn sends the whole conversation so far: system prompt, the agent's briefing, its answers
    and tool results. Within a round the agents send in order (20 ms apart), so round-robin moves
    every agent to the other server each round (3 agents, 2 servers)."""
    system = f"[run {run}] {SYSTEM}"  # a fresh prefix per run: no cache left over from another policy
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": _briefing(a)}] for a in range(AGENTS)]

    async def turn(a: int, t: int) -> None:
        await asyncio.sleep(0.02 * a)
        if t:
            chats[a].append({"role": "user", "content": _tool_result(a, t)})
        r = await client.chat.completions.create(
            model=MODEL,
            messages=chats[a],
            max_tokens=ANSWER_TOKENS,
            temperature=0,
            extra_headers={"x-switchyard-session": f"{run}-agent-{a}"},
        )
        chats[a].append({"role": "assistant", "content": r.choices[0].message.content})

    t0 = time.monotonic()
    for t in range(ROUNDS):
        await asyncio.gather(*(turn(a, t) for a in range(AGENTS)))
    return time.monotonic() - t0


async def _cached_share(llama_pair, gateway_factory, connect, policy: str) -> tuple[float, float]:
    gw = await gateway_factory(real_config(llama_pair, policy=policy))
    before = [await engine_counters(e) for e in llama_pair]
    wall = await _swarm(connect(gw), f"{policy}-{uuid.uuid4().hex[:8]}")
    after = [await engine_counters(e) for e in llama_pair]
    hits = sum(a["cache_hits"] - b["cache_hits"] for a, b in zip(after, before, strict=True))
    queries = sum(a["cache_queries"] - b["cache_queries"] for a, b in zip(after, before, strict=True))
    return hits / queries, wall


async def test_prefix_and_session_routing_reuse_the_engines_cache(llama_pair, gateway_factory, connect, figures):
    results = {}
    for policy in ("round-robin", "least-active", "prefix-aware", "session-affinity"):
        results[policy] = await _cached_share(llama_pair, gateway_factory, connect, policy)
    figures["llamacpp_cached_share_and_wall_s"] = {p: [round(s, 3), round(w, 1)] for p, (s, w) in results.items()}
    rr = results["round-robin"][0]
    assert results["prefix-aware"][0] > rr + 0.15, results
    assert results["session-affinity"][0] > rr + 0.15, results
