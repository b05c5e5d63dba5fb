"""`compare`: the same scenario once per registered routing policy, one table.
`validate`: the simulator's claims, checked by running it.

Claims (the published behaviour the engine model imitates):
1. With a shared system prompt, pinning every turn of a session to one engine raises the
   prefix-cache hit rate and cuts time to first token compared with round-robin.
2. Overload grows the engines' waiting queues (vllm:num_requests_waiting) and the tail latency,
   and drops no request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from policies import POLICIES
from policies.base import BasePolicy

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext

Run = Callable[..., Awaitable[dict[str, Any]]]


class SessionPin(BasePolicy):
    """Validator-only policy: every request of a session to the same engine (rendezvous hashing on
    the session id; requests without one take the first candidate). Not load-aware: issue 4's
    session-affinity policy is the real one."""

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        key = ctx.session_id or ""
        return max(candidates, key=lambda d: hashlib.blake2b(f"{key}|{d.name}".encode(), digest_size=8).digest())


def policy_names(requested: str | None) -> list[str]:
    """The policies to compare: all registered ones (new policies join automatically), or a list."""
    if not requested or requested == "all":
        return sorted(POLICIES, key=lambda p: (p != "round-robin", p))
    names = [p.strip() for p in requested.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}; registered: {', '.join(sorted(POLICIES))}")
    return names


async def compare(run: Run, policies: list[str]) -> list[dict[str, Any]]:
    return [await run(policy=p) for p in policies]


def _f(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _lag_ms(r: dict[str, Any]) -> str:
    lag = r.get("loop_lag_s", {}).get("p99")
    return "-" if lag is None else f"{lag * 1000:.0f}ms"


def compare_table(reports: list[dict[str, Any]]) -> str:
    r0 = reports[0]
    head = (
        f"scenario {r0['scenario']}  seed {r0['seed']}  time_scale {r0['time_scale']}  (simulated seconds)\n"
        f"{'policy':16}{'turn p50':>9}{'p95':>8}{'p99':>8}{'TTFT p50':>9}{'p95':>8}{'eng TTFT':>9}{'eng e2e99':>10}"
        f"{'prefix hit':>11}{'out tok/s':>10}{'sess p50':>9}{'wait pk':>8}{'sent':>6}{'err':>5}{'cost $':>9}"
        f"{'lag p99':>8}"
    )
    rows = []
    for r in reports:
        t, ttft = r["turns"]["latency_s"], r["ttft_s"]
        hit = r["prefix_hit_rate"]
        rows.append(
            f"{r['policy']:16}{_f(t['p50']):>9}{_f(t['p95']):>8}{_f(t['p99']):>8}{_f(ttft['p50']):>9}"
            f"{_f(ttft['p95']):>8}{_f(r['engine_ttft_mean_s']):>9}{_f(r.get('engine_e2e_p99_s'), '.2f'):>10}{('-' if hit is None else f'{100 * hit:.1f}%'):>11}"
            f"{r['tokens']['completion_per_s']:>10.0f}{_f(r['sessions']['duration_s']['p50'], '.1f'):>9}"
            f"{r['waiting_peak']:>8.0f}{r['requests']['sent']:>6}{r['requests']['errors']:>5}{r['remote_cost_usd']:>9.4f}"
            f"{_lag_ms(r):>8}"
        )
    return "\n".join([head, *rows])


def check(
    pinned: dict[str, Any], rr: dict[str, Any], base: dict[str, Any], over: dict[str, Any]
) -> list[dict[str, Any]]:
    """The claims as pass/fail lines with the figures behind them.

    Judged on the engines' own figures (prefix-cache counters, TTFT and e2e histograms, waiting
    gauge): they are what the simulator claims, and they run in their own process. Client-side
    figures include the gateway, the SDK and the swarm's event-loop lag on a busy machine; they are
    reported (`judged: False`) next to the loop lag, not judged."""

    def claim(name: str, ok: bool, detail: str, judged: bool = True) -> dict[str, Any]:
        return {"claim": name, "passed": bool(ok), "judged": judged, "detail": detail}

    ph, rh = pinned["prefix_hit_rate"] or 0.0, rr["prefix_hit_rate"] or 0.0
    pt, rt = pinned["engine_ttft_mean_s"], rr["engine_ttft_mean_s"]
    pc, rc = pinned["ttft_s"]["p50"], rr["ttft_s"]["p50"]
    be, oe = base.get("engine_e2e_p99_s"), over.get("engine_e2e_p99_s")
    bp99, op99 = base["turns"]["latency_s"]["p99"], over["turns"]["latency_s"]["p99"]
    oreq = over["requests"]
    lag = "loop lag p99 " + "/".join(_lag_ms(r) for r in (rr, pinned))
    return [
        claim(
            "pinning raises the prefix-cache hit rate",
            ph > rh,
            f"pinned {100 * ph:.1f}% vs round-robin {100 * rh:.1f}%",
        ),
        claim(
            "pinning cuts engine time to first token",
            pt is not None and rt is not None and pt < rt,
            f"engine TTFT mean pinned {_f(pt)} s vs round-robin {_f(rt)} s",
        ),
        claim(
            "overload grows the waiting queue",
            over["waiting_peak"] > base["waiting_peak"],
            f"vllm:num_requests_waiting peak {over['waiting_peak']:.0f} vs {base['waiting_peak']:.0f}",
        ),
        claim(
            "overload grows tail latency",
            oe is not None and be is not None and oe > be,
            f"engine request e2e p99 {_f(oe, '.2f')} s vs {_f(be, '.2f')} s",
        ),
        claim(
            "overload drops no request",
            oreq["errors"] == 0 and oreq["accounted"] and oreq["sent"] == oreq["gateway_answered"],
            f"sent {oreq['sent']} ok {oreq['ok']} errors {oreq['errors']} gateway answered {oreq['gateway_answered']}",
        ),
        claim(
            "client TTFT p50, pinned vs round-robin",
            pc is not None and rc is not None and pc < rc,
            f"{_f(pc)} s vs {_f(rc)} s ({lag})",
            judged=False,
        ),
        claim(
            "client turn p99, overload vs base",
            op99 is not None and bp99 is not None and op99 > bp99,
            f"{_f(op99, '.1f')} s vs {_f(bp99, '.1f')} s (loop lag p99 {_lag_ms(over)}/{_lag_ms(base)})",
            judged=False,
        ),
    ]


def passed(results: list[dict[str, Any]]) -> bool:
    return all(r["passed"] for r in results if r["judged"])


def check_table(results: list[dict[str, Any]]) -> str:
    def mark(r: dict[str, Any]) -> str:
        return ("PASS" if r["passed"] else "FAIL") if r["judged"] else "info"

    return "\n".join(f"{mark(r):5} {r['claim']:48} {r['detail']}" for r in results)
