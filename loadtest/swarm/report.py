"""The swarm's report: one JSON-able dict and a one-screen table.

All durations are simulated seconds (wall seconds x time_scale), like the engines' own metrics.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadtest.swarm.agent import Recorder
from loadtest.swarm.probe import EngineProbe, Snapshot, quantile

LAG_WARN_S = 0.02  # loop wake-ups later than this (p99) make engine step times visibly longer


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max by nearest rank (None when there is no value)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": s[-1]}


def _scaled(values: list[float | None], scale: float) -> list[float]:
    return [v * scale for v in values if v is not None]


def build(
    *,
    scenario: str,
    policy: str,
    seed: int,
    time_scale: float,
    wall_s: float,
    rec: Recorder,
    probes: list[EngineProbe],
    before: dict[str, Snapshot],
    after: dict[str, Snapshot],
    gateway_requests: float,
    loop_lag: list[float] | None = None,
) -> dict[str, Any]:
    calls, turns, sessions = rec.calls, rec.turns, rec.sessions
    errors = Counter(c.error for c in calls if c.error is not None)
    ok = sum(1 for c in calls if c.error is None)
    prompt = sum(c.prompt_tokens for c in calls)
    completion = sum(c.completion_tokens for c in calls)
    sim_s = wall_s * time_scale
    engines: dict[str, Any] = {}
    q_total = h_total = 0.0
    e2e_all: dict[float, float] = {}
    ttft_all: dict[float, float] = {}
    for p in probes:
        d = after[p.name].minus(before[p.name])
        for le, n in d.e2e_buckets.items():
            e2e_all[le] = e2e_all.get(le, 0.0) + n
        for le, n in d.ttft_buckets.items():
            ttft_all[le] = ttft_all.get(le, 0.0) + n
        q_total += d.queries
        h_total += d.hits
        waiting = [s.waiting for s in p.samples]
        running = [s.running for s in p.samples]
        engines[p.name] = {
            "profile": p.profile,
            "requests": int(d.requests),
            "prefix_queries_tokens": int(d.queries),
            "prefix_hits_tokens": int(d.hits),
            "prefix_hit_rate": d.hits / d.queries if d.queries else None,
            "engine_ttft_mean_s": d.ttft_sum / d.ttft_count if d.ttft_count else None,
            "engine_ttft_p99_s": quantile(d.ttft_buckets, 0.99),
            "engine_e2e_p99_s": quantile(d.e2e_buckets, 0.99),
            "preemptions": int(d.preemptions),
            "waiting_peak": max(waiting, default=0.0),
            "waiting_mean": sum(waiting) / len(waiting) if waiting else 0.0,
            "running_mean": sum(running) / len(running) if running else 0.0,
            "cost_usd": round(d.cost_usd, 6),
        }
    ttft_n = sum(e["engine_ttft_mean_s"] * e["requests"] for e in engines.values() if e["engine_ttft_mean_s"])
    ttft_d = sum(e["requests"] for e in engines.values() if e["engine_ttft_mean_s"])
    return {
        "scenario": scenario,
        "policy": policy,
        "seed": seed,
        "time_scale": time_scale,
        "wall_s": round(wall_s, 3),
        "simulated_s": round(sim_s, 3),
        "requests": {
            "sent": len(calls),
            "ok": ok,
            "errors": sum(errors.values()),
            "errors_by_type": dict(errors),
            "accounted": len(calls) == ok + sum(errors.values()),
            "gateway_answered": int(gateway_requests),
        },
        "turns": {
            "count": len(turns),
            "ok": sum(1 for t in turns if t.latency is not None),
            "latency_s": percentiles(_scaled([t.latency for t in turns], time_scale)),
        },
        "ttft_s": percentiles(_scaled([c.ttft for c in calls if c.error is None], time_scale)),
        "sessions": {
            "count": len(sessions),
            "completed": sum(1 for s in sessions if s.duration is not None),
            "by_kind": dict(Counter(s.kind for s in sessions)),
            "duration_s": percentiles(_scaled([s.duration for s in sessions], time_scale)),
        },
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "completion_per_s": completion / sim_s if sim_s else 0.0,
            "total_per_s": (prompt + completion) / sim_s if sim_s else 0.0,
        },
        "prefix_hit_rate": h_total / q_total if q_total else None,
        "engine_ttft_mean_s": ttft_n / ttft_d if ttft_d else None,
        # from the engines' histograms (vLLM buckets, interpolated like histogram_quantile)
        "engine_ttft_p99_s": quantile(ttft_all, 0.99),
        "engine_e2e_p50_s": quantile(e2e_all, 0.50),
        "engine_e2e_p99_s": quantile(e2e_all, 0.99),
        "waiting_peak": max((e["waiting_peak"] for e in engines.values()), default=0.0),
        "remote_cost_usd": round(sum(e["cost_usd"] for e in engines.values()), 6),
        # wall seconds the shared event loop woke up late: the run's fidelity (see docs/swarm.md)
        "loop_lag_s": percentiles(loop_lag or []),
        "engines": engines,
        # raw series for plots: [start, latency] per turn; [t, waiting, running] per engine sample
        "series": {
            "turns": [
                [round(t.start * time_scale, 3), round(t.latency * time_scale, 4)]
                for t in turns
                if t.latency is not None
            ],
            "engines": {
                p.name: [[round(x.t * time_scale, 3), x.waiting, x.running] for x in p.samples] for p in probes
            },
        },
    }


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def table(r: dict[str, Any]) -> str:
    """One screen: totals, latency percentiles, per-engine lines."""
    req, t, s, tok = r["requests"], r["turns"]["latency_s"], r["sessions"], r["tokens"]
    ttft, sd = r["ttft_s"], s["duration_s"]
    lines = [
        f"scenario {r['scenario']}  policy {r['policy']}  seed {r['seed']}  time_scale {r['time_scale']}  "
        f"wall {r['wall_s']:.1f} s  simulated {r['simulated_s']:.1f} s   (times in simulated seconds)",
        f"requests  sent {req['sent']}  ok {req['ok']}  errors {req['errors']} {req['errors_by_type'] or ''}  "
        f"accounted {'yes' if req['accounted'] else 'NO'}  gateway answered {req['gateway_answered']}",
        f"sessions  {s['completed']}/{s['count']} completed  {s['by_kind']}",
        "",
        f"{'':22}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
        f"{'turn latency (s)':22}" + "".join(f"{_f(t[k]):>9}" for k in ("p50", "p95", "p99", "max")),
        f"{'TTFT (s)':22}" + "".join(f"{_f(ttft[k]):>9}" for k in ("p50", "p95", "p99", "max")),
        f"{'session time (s)':22}" + "".join(f"{_f(sd[k], 1):>9}" for k in ("p50", "p95", "p99", "max")),
        "",
        f"cluster  {tok['completion_per_s']:.0f} output tok/s  {tok['total_per_s']:.0f} total tok/s  "
        f"prefix hit {_pct(r['prefix_hit_rate'])}  remote cost ${r['remote_cost_usd']:.4f}",
        f"engines  TTFT mean {_f(r['engine_ttft_mean_s'])} s  p99 {_f(r['engine_ttft_p99_s'])} s  "
        f"request e2e p50 {_f(r['engine_e2e_p50_s'])} s  p99 {_f(r['engine_e2e_p99_s'])} s",
        "",
        f"{'engine':14}{'profile':>9}{'requests':>10}{'prefix hit':>12}{'eng TTFT':>10}"
        f"{'wait peak':>11}{'wait mean':>11}{'run mean':>10}{'preempt':>9}{'cost $':>10}",
    ]
    lag = r["loop_lag_s"]["p99"]
    if lag is not None and lag > LAG_WARN_S:
        lines.insert(
            3,
            f"WARNING  event loop lag p99 {lag * 1000:.0f} ms (wall): CPU-bound run, simulated times are "
            "stretched; use a smaller --time-scale or fewer agents",
        )
    for name, e in r["engines"].items():
        lines.append(
            f"{name:14}{e['profile']:>9}{e['requests']:>10}{_pct(e['prefix_hit_rate']):>12}"
            f"{_f(e['engine_ttft_mean_s']):>10}{e['waiting_peak']:>11.0f}{e['waiting_mean']:>11.1f}"
            f"{e['running_mean']:>10.1f}{e['preemptions']:>9}{e['cost_usd']:>10.4f}"
        )
    return "\n".join(lines)
