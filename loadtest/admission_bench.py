"""Admission-queue benchmark (issue 13): the gateway's queue with least attained service (PLAS) vs the
same queue FCFS vs no queue (503 when every deployment is at max_concurrency), on SIMULATED engines
driven by agent-swarm agents, at multiples of the cluster's capacity.

    python -m loadtest.admission_bench --load 1.5,3 --modes las,fcfs,none [--reps 1] [--json out.json]
        [--sessions 80] [--engines 2] [--slots 4] [--time-scale 0.5] [--mix agentic|heavy-tail|swarm|smoke]
        [--fairness credit=200,half_life=60,output_weight=2,promote=10]   (simulated seconds)

Modes: `las`, `fcfs`, `none`; a mode may carry its own fairness values for tuning, e.g.
`las:credit=1000:promote=5` (credit = wait_credit_tokens_per_s, half_life = half_life_s, output_weight,
promote = promote_after_s; seconds are simulated seconds).

The cluster: `--engines` simulated vLLM engines of loadtest/configs/four-engines.toml's cost model,
each with `max_num_seqs = --slots` and the gateway's `backends[].max_concurrency = --slots`, so the
gateway bounds capacity (the engines never queue) and "no queue" answers 503 at the bound.

Sessions: the swarm's Agent (openai SDK, streaming, tool calls, think time) runs each agent session,
sending `x-switchyard-session` (a new id per session) and its kind's class as `x-switchyard-priority`.
A session has at most one call in flight; its next call follows the previous answer (and a tool or
think pause), so a session that waits in the queue also asks for less.

Capacity (measured first, in the same run): `slots` agents run sessions back to back, unloaded (at
most `slots` calls in flight, so nothing can queue), for `--calibrate` simulated seconds. Each kind's
slot time per session b_k (the time its calls hold a slot) gives the capacity in sessions per second
of the mix, mu = slots / sum_k(share_k x b_k). Load L: `--sessions` sessions of the mix arrive as a
Poisson process of rate L x mu (faster arrival; the same sessions, order and kinds at every load and
in every mode), and the run ends when the last one ends. The unloaded run's interactive turn latency
is the "unloaded" reference.

Fidelity: the fairness and deadline settings are wall-clock seconds in the gateway; the benchmark
converts the configured (simulated-second) values by the time scale, so the queue sees the same
situation as in real time. Interleaved: every repetition runs the unloaded baseline, then each load's
modes in turn (A, B, C, A, B, C), so load drift on a shared machine hits all modes alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from gateway.admission import QUEUE_HEADER
from gateway.admission.config import CLASSES, AdmissionConfig, ClassConfig, FairnessConfig
from gateway.config import Config, ConfigError, load_config
from gateway.logs import configure_logging
from gateway.request import SESSION_HEADER
from gateway.server import start_gateway
from loadtest.swarm import workload
from loadtest.swarm.agent import Agent, AgentSpec, Recorder
from loadtest.swarm.engines import EngineHost
from loadtest.swarm.probe import lag_loop
from loadtest.swarm.report import percentiles
from loadtest.swarm.runner import DEFAULT_KEY
from loadtest.swarm.scenarios import CHAT, RAG, SCENARIOS, SUMMARIZER, AgentKind

DEFAULT_CONFIG = "loadtest/configs/four-engines.toml"

# A long agentic loop (a coding agent): many turns, each a tool call and its follow-up (12-28 calls).
CODER = AgentKind(
    "coder",
    "interactive",
    turns=(6, 14),
    user_tokens=(20, 80),
    context_tokens=(500, 1500),
    max_tokens=96,
    think_s=(0.5, 2.0),
    tool_every=1,
    tool_s=(0.2, 1.0),
)
# A batch research / eval agent: tool-using steps over its own documents, no think time (10-24 calls).
RESEARCHER = AgentKind(
    "researcher",
    "batch",
    turns=(5, 12),
    user_tokens=(20, 60),
    context_tokens=(1500, 3000),
    max_tokens=128,
    think_s=(0.0, 0.2),
    tool_every=1,
    tool_s=(0.2, 0.6),
)

# A very long agentic loop (a coding agent on a big task): 20-40 calls with short pauses.
LONG_CODER = replace(CODER, name="longcoder", turns=(10, 20), think_s=(0.2, 0.5), tool_s=(0.1, 0.3))


@dataclass(frozen=True)
class Mix:
    name: str
    shares: dict[str, float]  # kind -> share of sessions
    kinds: dict[str, AgentKind]
    system_tokens: int = 600
    description: str = ""


_SMOKE = SCENARIOS["smoke"]
MIXES = {
    m.name: m
    for m in (
        Mix(
            # heavy-tailed, as agent traffic is (Autellix): most sessions are short (chat, one-shot
            # summaries), most of the demand comes from long loops (batch research agents, a few
            # coding agents). Shares of sessions; interactive is about 30% of the slot time.
            "agentic",
            {"chat": 0.30, "rag": 0.08, "coder": 0.02, "summarizer": 0.30, "researcher": 0.30},
            {k.name: k for k in (CHAT, RAG, CODER, SUMMARIZER, RESEARCHER)},
            description="chat, RAG, long coding loops (interactive); summaries, long research loops (batch)",
        ),
        Mix(
            # heavier-tailed: in each class most sessions are short and a few are long (session slot
            # time CV 0.93 measured, vs 0.65-0.79 for agentic)
            "heavy-tail",
            {"chat": 0.40, "longcoder": 0.06, "summarizer": 0.50, "researcher": 0.04},
            {k.name: k for k in (CHAT, LONG_CODER, SUMMARIZER, RESEARCHER)},
            description="chat and a few 20-40-call coding loops (interactive); summaries and a few research loops",
        ),
        Mix(
            "swarm",
            {"chat": 0.5, "rag": 0.35, "summarizer": 0.15},
            {k.name: k for k in (CHAT, RAG, SUMMARIZER)},
            description="the swarm's agents-100 mix",
        ),
        Mix(
            "smoke",
            dict(_SMOKE.mix),
            {
                **_SMOKE.kinds,
                "summarizer": replace(_SMOKE.kinds["summarizer"], context_tokens=(100, 200), max_tokens=8),
                "chat": replace(_SMOKE.kinds["chat"], max_tokens=8),
            },
            system_tokens=_SMOKE.system_tokens,
            description="tests: tiny sessions",
        ),
    )
}

# fairness knobs a mode may set (simulated seconds / tokens per simulated second)
_KNOBS = {
    "credit": "wait_credit_tokens_per_s",
    "half_life": "half_life_s",
    "output_weight": "output_weight",
    "promote": "promote_after_s",
}


@dataclass(frozen=True)
class Mode:
    label: str
    policy: str  # las | fcfs | none
    fairness: dict[str, float] = field(default_factory=dict)  # FairnessConfig field -> simulated value


def parse_modes(text: str, base: dict[str, float] | None = None) -> list[Mode]:
    """`las,fcfs,none,las:credit=1000:promote=5` -> modes (unknown names and knobs are errors)."""
    modes = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, *knobs = item.split(":")
        if name not in ("las", "fcfs", "none"):
            raise ValueError(f"unknown mode {name!r}; expected las, fcfs or none (las:credit=...)")
        values = dict(base or {})
        for knob in knobs:
            key, _, raw = knob.partition("=")
            if key not in _KNOBS:
                raise ValueError(f"unknown fairness knob {key!r}; expected one of {', '.join(_KNOBS)}")
            values[_KNOBS[key]] = float(raw)
        modes.append(Mode(item, name, values))
    if len({m.label for m in modes}) != len(modes):
        raise ValueError("a mode is listed twice")
    return modes


def parse_knobs(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for knob in (text or "").split(","):
        if knob.strip():
            key, _, raw = knob.strip().partition("=")
            if key not in _KNOBS:
                raise ValueError(f"unknown fairness knob {key!r}; expected one of {', '.join(_KNOBS)}")
            out[_KNOBS[key]] = float(raw)
    return out


# -- the cluster -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    engines: int = 2
    slots: int = 8  # per engine: the engine's max_num_seqs and the gateway's max_concurrency
    time_scale: float = 0.5

    @property
    def total_slots(self) -> int:
        return self.engines * self.slots


def admission_for(mode: Mode, scale: float) -> AdmissionConfig:
    """The `[admission]` section of a mode, its simulated-second settings converted to wall seconds."""
    if mode.policy == "none":
        return AdmissionConfig(enabled=False)
    base = AdmissionConfig()
    fair = base.fairness.model_dump()
    fair.update(mode.fairness)
    fair["policy"] = mode.policy
    for k in ("half_life_s", "promote_after_s", "forget_after_s"):
        fair[k] = fair[k] / scale
    fair["wait_credit_tokens_per_s"] = fair["wait_credit_tokens_per_s"] * scale
    classes = {c: ClassConfig(max_wait_s=base.max_wait(c) / scale) for c in CLASSES}
    return base.model_copy(update={"fairness": FairnessConfig(**fair), "classes": classes})


def bench_config(base: Config, cluster: Cluster, mode: Mode) -> Config:
    """The base config cut to `engines` loopback engines, each bounded at `slots`, with the mode's queue."""
    local = [b for b in base.backends if b.url.startswith(("http://127.0.0.1", "http://localhost"))]
    if len(local) < cluster.engines:
        raise ValueError(f"the config has {len(local)} loopback backends; --engines {cluster.engines} needs more")
    backends = [b.model_copy(update={"max_concurrency": cluster.slots}) for b in local[: cluster.engines]]
    names = {b.name for b in backends}
    models = []
    for m in base.models:
        deps = [d for d in m.deployments if d.backend in names]
        if deps:
            models.append(m.model_copy(update={"deployments": deps, "fallbacks": []}))
    if not models:
        raise ValueError("no model is served by the benchmark's engines")
    sim = base.simulation
    if sim is None:
        raise ValueError("the config needs a [simulation] section (the engines' cost model)")
    sim = sim.model_copy(update={"time_scale": cluster.time_scale})
    return base.model_copy(
        update={
            "backends": backends,
            "models": models,
            "simulation": sim,
            "admission": admission_for(mode, cluster.time_scale),
        }
    )


# -- agents ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One agent: its kind, when it starts (simulated seconds), and how many sessions it runs back to
    back (None: it starts sessions until `until_s`)."""

    index: int
    kind: str
    start_s: float
    sessions: int | None = 1
    until_s: float = 0.0


def counts(shares: dict[str, float], n: int) -> dict[str, int]:
    """Sessions (or agents) per kind: at least one of each when there are enough, the remainder to
    the largest share."""
    total = sum(shares.values())
    floor = 1 if n >= len(shares) else 0
    out = {k: max(floor, int(n * s / total)) for k, s in shares.items()}
    out[max(shares, key=lambda k: shares[k])] += n - sum(out.values())
    return out


def calibration_plans(mix: Mix, agents: int, seed: int, ramp_s: float, until_s: float) -> list[Plan]:
    """The unloaded run: `agents` agents (one per slot) start sessions back to back until `until_s`."""
    rng = random.Random(f"calibrate/{seed}")
    kinds = [k for k, n in counts(mix.shares, agents).items() for _ in range(n)]
    rng.shuffle(kinds)
    step = ramp_s / max(1, len(kinds))
    return [Plan(1000 + i, k, i * step, None, until_s) for i, k in enumerate(kinds)]


def arrivals(mix: Mix, sessions: int, seed: int, rate: float) -> list[Plan]:
    """`sessions` sessions of the mix, kinds shuffled, arriving as a Poisson process of `rate` per
    simulated second. The same seed gives the same sessions in the same order at every rate (only
    the gaps scale), so loads and modes are compared on identical work."""
    rng = random.Random(f"arrivals/{seed}")
    kinds = [k for k, n in counts(mix.shares, sessions).items() for _ in range(n)]
    rng.shuffle(kinds)
    t, out = 0.0, []
    for i, k in enumerate(kinds):
        out.append(Plan(i, k, t / rate))
        t += rng.expovariate(1.0)
    return out


async def run_agent(
    client: AsyncOpenAI, model: str, mix: Mix, plan: Plan, seed: int, rec: Recorder, scale: float, system: str
) -> None:
    """Sessions of the plan's kind back to back; the next one starts after the kind's think time."""
    kind = mix.kinds[plan.kind]
    rng = random.Random(f"{seed}/{plan.index}")
    delay, n = plan.start_s, 0
    while plan.sessions is None or n < plan.sessions:
        if plan.sessions is None and n and rec.now() * scale >= plan.until_s:
            break
        spec = AgentSpec(f"adm-{seed}-{plan.index:04d}-{n:03d}-{plan.kind}", kind, rng.randrange(2**32), delay, system)
        await Agent(client, model, spec, rec, scale).run()
        delay = rng.uniform(*kind.think_s)
        n += 1


def _queue_waits(registry: Any) -> dict[str, dict[str, float]]:
    """switchyard_queue_wait_seconds by class: count and sum (wall seconds)."""
    out: dict[str, dict[str, float]] = {}
    for family in registry.collect():
        if family.name != "switchyard_queue_wait_seconds":
            continue
        for s in family.samples:
            cls = s.labels.get("class", "")
            if s.name.endswith("_count"):
                out.setdefault(cls, {})["count"] = s.value
            elif s.name.endswith("_sum"):
                out.setdefault(cls, {})["sum"] = s.value
    return out


async def run_once(
    base: Config,
    cluster: Cluster,
    mix: Mix,
    mode: Mode,
    agent_plans: list[Plan],
    *,
    seed: int,
    label: str,
    load: float | None,
    rate: float | None = None,
    engines_process: bool = True,
    client_retries: int = 0,
    api_key: str = DEFAULT_KEY,
) -> dict[str, Any]:
    config = bench_config(base, cluster, mode)
    scale = cluster.time_scale
    host = EngineHost(separate_process=engines_process)
    config, _refs = await host.start(config, max_num_seqs=cluster.slots)
    model = config.models[0].name
    try:
        gw = await start_gateway(config, host="127.0.0.1", port=0)
    except BaseException:
        await host.stop()
        raise
    queued: dict[str, list[float]] = {}  # kind -> gateway queue wait of each answered call (wall s)

    async def on_response(resp: httpx.Response) -> None:
        session = resp.request.headers.get(SESSION_HEADER, "")
        ms = resp.headers.get(QUEUE_HEADER)
        if resp.status_code == 200:
            queued.setdefault(session.rsplit("-", 1)[-1], []).append(float(ms) / 1000 if ms else 0.0)

    http = DefaultAsyncHttpxClient(event_hooks={"response": [on_response]})
    client = AsyncOpenAI(base_url=gw.url, api_key=api_key, max_retries=client_retries, timeout=600.0, http_client=http)
    lag: list[float] = []
    lagger = asyncio.create_task(lag_loop(lag))
    load_before = os.getloadavg()
    try:
        rec = Recorder()
        system = workload.system_prompt(mix.system_tokens)
        await asyncio.gather(*(run_agent(client, model, mix, p, seed, rec, scale, system) for p in agent_plans))
        wall = time.perf_counter() - rec.t0
        waits = _queue_waits(gw.gateway.metrics.registry)
    finally:
        lagger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lagger
        await client.close()
        await gw.stop()
        await host.stop()
    return summarize(
        rec,
        mix,
        label=label,
        mode=mode,
        load=load,
        rate=rate,
        scale=scale,
        wall_s=wall,
        lag=lag,
        waits=waits,
        queued=queued,
        loadavg=(load_before, os.getloadavg()),
    )


# -- the report -----------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(
    rec: Recorder,
    mix: Mix,
    *,
    label: str,
    mode: Mode,
    load: float | None,
    rate: float | None,
    scale: float,
    wall_s: float,
    lag: list[float],
    waits: dict[str, dict[str, float]],
    queued: dict[str, list[float]],
    loadavg: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> dict[str, Any]:
    """One run's figures, in simulated seconds."""
    cls_of = {k: mix.kinds[k].priority for k in mix.kinds}
    sessions = rec.sessions
    done = [s for s in sessions if s.duration is not None]
    errors: dict[str, int] = {}
    for c in rec.calls:
        if c.error is not None:
            errors[c.error] = errors.get(c.error, 0) + 1

    def durations(cls: str | None = None, kind: str | None = None) -> list[float]:
        return [
            s.duration * scale
            for s in done
            if s.duration is not None and (cls is None or cls_of[s.kind] == cls) and (kind is None or s.kind == kind)
        ]

    def session_stats(cls: str | None = None) -> dict[str, Any]:
        ds = durations(cls)
        n = sum(1 for s in sessions if cls is None or cls_of[s.kind] == cls)
        return {"count": n, "completed": len(ds), "mean_s": _mean(ds), "p95_s": percentiles(ds)["p95"]}

    inter_turns = [t.latency * scale for t in rec.turns if t.latency is not None and cls_of[t.kind] == "interactive"]
    inter_ttft = [
        c.ttft * scale for c in rec.calls if c.ttft is not None and c.error is None and cls_of[c.kind] == "interactive"
    ]
    batch_done = [s for s in done if cls_of[s.kind] == "batch"]
    batch_end = max((s.start + (s.duration or 0.0) for s in batch_done), default=0.0) * scale
    batch_out = sum(c.completion_tokens for c in rec.calls if c.error is None and cls_of[c.kind] == "batch")
    # each kind's slot time per completed session (for the capacity estimate)
    kind_of = {s.session: s.kind for s in done}
    busy: dict[str, float] = {}
    for c in rec.calls:
        if c.latency is not None and c.session in kind_of:
            busy[c.kind] = busy.get(c.kind, 0.0) + c.latency * scale
    per_kind = {}
    for k in mix.kinds:
        n = sum(1 for s in sessions if s.kind == k)
        if not n:
            continue
        ds = durations(kind=k)
        per_kind[k] = {
            "sessions": n,
            "completed": len(ds),
            "mean_s": _mean(ds),
            "p95_s": percentiles(ds)["p95"],
            "slot_s_per_session": busy.get(k, 0.0) / len(ds) if ds else None,
            "queue_mean_s": None if not queued.get(k) else statistics.fmean(queued[k]) * scale,
            "queue_p95_s": percentiles([q * scale for q in queued.get(k, [])])["p95"],
        }
    lat = percentiles(inter_turns)
    return {
        "label": label,
        "mode": mode.label,
        "policy": mode.policy,
        "fairness": mode.fairness,
        "load": load,
        "arrivals_per_min": None if rate is None else rate * 60,
        "time_scale": scale,
        "wall_s": round(wall_s, 2),
        "simulated_s": round(wall_s * scale, 2),
        "loadavg_before": [round(x, 2) for x in loadavg[0]],
        "loadavg_after": [round(x, 2) for x in loadavg[1]],
        "loop_lag_p99_ms": None if not lag else round(1000 * percentiles(lag)["p99"], 1),  # type: ignore[operator]
        "calls": {"sent": len(rec.calls), "errors": sum(errors.values()), "errors_by_type": errors},
        "sessions": session_stats(),
        "interactive": {
            **session_stats("interactive"),
            "turns": len(inter_turns),
            "turn_p50_s": lat["p50"],
            "turn_p95_s": lat["p95"],
            "turn_p99_s": lat["p99"],
            "ttft_p95_s": percentiles(inter_ttft)["p95"],
        },
        "batch": {
            **session_stats("batch"),
            "output_tokens": batch_out,
            "last_done_s": round(batch_end, 2),
            "output_tok_per_s": batch_out / batch_end if batch_end > 0 else None,
        },
        "queue_wait_mean_s": {
            cls: (w.get("sum", 0.0) / w["count"]) * scale for cls, w in waits.items() if w.get("count")
        },
        "kinds": per_kind,
    }


def capacity(baseline: dict[str, Any], mix: Mix, slots: int) -> dict[str, Any]:
    """Sessions per simulated second of the mix the cluster serves (see the module docstring)."""
    kinds = baseline["kinds"]
    total = sum(mix.shares.values())
    missing = [k for k in mix.shares if not kinds.get(k, {}).get("slot_s_per_session")]
    if missing:
        raise RuntimeError(f"the unloaded run completed no session of {', '.join(missing)}: calibrate longer")
    per_session = sum(mix.shares[k] / total * kinds[k]["slot_s_per_session"] for k in mix.shares)
    inter = sum(
        mix.shares[k] / total * kinds[k]["slot_s_per_session"]
        for k in mix.shares
        if mix.kinds[k].priority == "interactive"
    )
    rate = slots / per_session
    return {
        "slots": slots,
        "slot_s_per_session": per_session,
        "sessions_per_s": rate,
        # Little's law: sessions in progress at that rate, unloaded
        "concurrent_sessions": rate * sum(mix.shares[k] / total * kinds[k]["mean_s"] for k in mix.shares),
        "interactive_share_of_demand": inter / per_session,
        "session_s": {k: kinds[k]["mean_s"] for k in mix.shares},
        "slot_s": {k: kinds[k]["slot_s_per_session"] for k in mix.shares},
    }


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


HEAD = (
    f"{'run':24}{'arr/min':>8}{'sess':>6}{'done':>6}{'mean s':>8}{'p95 s':>8}{'int mean':>9}{'bat mean':>9}"
    f"{'int turn p95':>13}{'vs unl':>7}{'bat done':>9}{'bat tok/s':>10}{'q int':>7}{'q bat':>7}{'errors':>8}"
    f"{'sim s':>7}{'lag99':>7}{'load1':>7}"
)


def row(r: dict[str, Any], unloaded_p95: float | None) -> str:
    s, i, b = r["sessions"], r["interactive"], r["batch"]
    ratio = i["turn_p95_s"] / unloaded_p95 if unloaded_p95 and i["turn_p95_s"] is not None else None
    q = r["queue_wait_mean_s"]
    return (
        f"{r['label']:24}{_f(r['arrivals_per_min'], '.0f'):>8}{s['count']:>6}{s['completed']:>6}{_f(s['mean_s']):>8}{_f(s['p95_s']):>8}"
        f"{_f(i['mean_s']):>9}{_f(b['mean_s']):>9}{_f(i['turn_p95_s'], '.3f'):>13}{_f(ratio):>7}"
        f"{b['completed']:>5}/{b['count']:<3}{_f(b['output_tok_per_s'], '.0f'):>10}"
        f"{_f(q.get('interactive')):>7}{_f(q.get('batch')):>7}{r['calls']['errors']:>8}"
        f"{r['simulated_s']:>7.1f}{_f(r['loop_lag_p99_ms'], '.0f'):>7}{r['loadavg_before'][0]:>7.2f}"
    )


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per (load, mode): medians over repetitions of the judged figures."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        key = r["label"]
        out.setdefault(key, {"load": r["load"], "mode": r["mode"], "policy": r["policy"], "runs": []})["runs"].append(r)
    for a in out.values():
        rs = a["runs"]
        a["mean_session_s"] = _median([r["sessions"]["mean_s"] for r in rs])
        a["p95_session_s"] = _median([r["sessions"]["p95_s"] for r in rs])
        a["interactive_turn_p95_s"] = _median([r["interactive"]["turn_p95_s"] for r in rs])
        a["errors"] = sum(r["calls"]["errors"] for r in rs)
        a["errors_503"] = sum(r["calls"]["errors_by_type"].get("http_503", 0) for r in rs)
        a["batch_completed"] = sum(r["batch"]["completed"] for r in rs)
        a["batch_count"] = sum(r["batch"]["count"] for r in rs)
        a["batch_tok_per_s"] = _median([r["batch"]["output_tok_per_s"] for r in rs])
        a["sessions_completed"] = sum(r["sessions"]["completed"] for r in rs)
        a["sessions_count"] = sum(r["sessions"]["count"] for r in rs)
        del a["runs"]
    return out


def judge(agg: dict[str, dict[str, Any]], unloaded_p95: float | None, top_load: float) -> list[dict[str, Any]]:
    """Issue 13's targets at the highest load (PASS / FAIL with the figures)."""
    at = {a["mode"]: a for a in agg.values() if a["load"] == top_load}
    out: list[dict[str, Any]] = []
    las, fcfs, none = at.get("las"), at.get("fcfs"), at.get("none")
    if las and fcfs and las["mean_session_s"] and fcfs["mean_session_s"]:
        cut = 1 - las["mean_session_s"] / fcfs["mean_session_s"]
        out.append(
            {
                "target": f">= 30% lower mean session time, LAS vs FCFS at {top_load:g}x",
                "ok": cut >= 0.30,
                "detail": f"LAS {las['mean_session_s']:.2f} s vs FCFS {fcfs['mean_session_s']:.2f} s: {100 * cut:+.1f}%",
            }
        )
    if las and unloaded_p95 and las["interactive_turn_p95_s"]:
        ratio = las["interactive_turn_p95_s"] / unloaded_p95
        batch_ok = las["batch_completed"] == las["batch_count"] > 0
        out.append(
            {
                "target": f"interactive turn p95 at {top_load:g}x within 2x unloaded, batch completes (LAS)",
                "ok": ratio <= 2.0 and batch_ok,
                "detail": f"{las['interactive_turn_p95_s']:.3f} s vs unloaded {unloaded_p95:.3f} s = {ratio:.2f}x; "
                f"batch sessions {las['batch_completed']}/{las['batch_count']} completed",
            }
        )
    if none is not None:
        for name, q in (("LAS", las), ("FCFS", fcfs)):
            if q is None:
                continue
            out.append(
                {
                    "target": f"zero errors with the queue ({name}) where no queue has 503s, {top_load:g}x",
                    "ok": q["errors"] == 0 and none["errors_503"] > 0,
                    "detail": f"{name} errors {q['errors']}; no queue: {none['errors_503']} x 503, "
                    f"{none['sessions_completed']}/{none['sessions_count']} sessions completed",
                }
            )
    return out


# -- the command ----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.admission_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--load", default="1.5,3", help="multiples of capacity, comma-separated")
    p.add_argument("--modes", default="las,fcfs,none", help="las, fcfs, none; las:credit=...:promote=... to tune")
    p.add_argument("--fairness", help="base fairness for every queued mode: credit=,half_life=,output_weight=,promote=")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--mix", default="agentic", choices=sorted(MIXES))
    p.add_argument(
        "--one-class",
        choices=CLASSES,
        help="every session sends this class (default: each kind's own: interactive or batch)",
    )
    p.add_argument("--engines", type=int, default=2, help="simulated engines (from the config's loopback backends)")
    p.add_argument("--slots", type=int, default=4, help="per engine: max_num_seqs = backends[].max_concurrency")
    p.add_argument("--time-scale", type=float, default=0.5, help="simulated seconds per wall second")
    p.add_argument("--sessions", type=int, default=80, help="sessions per loaded run (the same in every run)")
    p.add_argument("--calibrate", type=float, default=15.0, help="simulated seconds of the unloaded run")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--capacity", type=float, help="capacity in sessions per simulated minute (instead of measured)")
    p.add_argument("--client-retries", type=int, default=0, help="the openai SDK's max_retries (0: every 503 counts)")
    p.add_argument("--engines-inline", action="store_true", help="engines in this process (tests; less faithful)")
    p.add_argument("--json", help="write every run, the aggregate and the verdicts here")
    return p


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = load_config(args.config)
    mix = MIXES[args.mix]
    if args.one_class:
        mix = replace(
            mix,
            name=f"{mix.name}/{args.one_class}",
            kinds={k: replace(v, priority=args.one_class) for k, v in mix.kinds.items()},
        )
    cluster = Cluster(args.engines, args.slots, args.time_scale)
    loads = [float(x) for x in args.load.split(",") if x.strip()]
    modes = parse_modes(args.modes, parse_knobs(args.fairness))
    if not loads or not modes:
        raise ValueError("--load and --modes need at least one value each")
    if cluster.total_slots < len(mix.shares):
        raise ValueError(f"the unloaded run needs at least one slot per agent kind ({len(mix.shares)})")
    process = not args.engines_inline
    runs: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    cap: dict[str, Any] | None = None
    started = time.perf_counter()
    for rep in range(args.reps):
        seed = args.seed + rep
        # unloaded: as many agents as slots, so no call can ever wait for one
        unloaded = calibration_plans(mix, cluster.total_slots, seed, 2.0, args.calibrate)
        b = await run_once(
            base,
            cluster,
            mix,
            Mode("las", "las"),
            unloaded,
            seed=seed,
            label="unloaded",
            load=None,
            engines_process=process,
            client_retries=args.client_retries,
        )
        baselines.append(b)
        _progress(b, started)
        if cap is None:
            cap = capacity(b, mix, cluster.total_slots)
            if args.capacity:
                cap["measured_sessions_per_s"] = cap["sessions_per_s"]
                cap["sessions_per_s"] = args.capacity / 60
            print(_capacity_line(cap, cluster), file=sys.stderr)
        for load in loads:
            rate = load * cap["sessions_per_s"]
            agent_plans = arrivals(mix, args.sessions, seed, rate)
            for mode in modes:
                r = await run_once(
                    base,
                    cluster,
                    mix,
                    mode,
                    agent_plans,
                    seed=seed,
                    label=f"{load:g}x {mode.label}",
                    load=load,
                    rate=rate,
                    engines_process=process,
                    client_retries=args.client_retries,
                )
                # the same sessions' mean if none of them ever waited (each kind's unloaded mean)
                r["unqueued_mean_s"] = sum(v["sessions"] * cap["session_s"][k] for k, v in r["kinds"].items()) / max(
                    1, r["sessions"]["count"]
                )
                runs.append(r)
                _progress(r, started)
    assert cap is not None
    unloaded_p95 = _median([b["interactive"]["turn_p95_s"] for b in baselines])
    agg = aggregate(runs)
    verdicts = judge(agg, unloaded_p95, max(loads))
    return {
        "command": "python -m loadtest.admission_bench " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "params": {
            "mix": mix.name,
            "shares": mix.shares,
            "engines": cluster.engines,
            "slots_per_engine": cluster.slots,
            "time_scale": cluster.time_scale,
            "sessions": args.sessions,
            "calibrate_s": args.calibrate,
            "reps": args.reps,
            "seed": args.seed,
            "client_retries": args.client_retries,
            "loads": loads,
            "modes": [{"label": m.label, "policy": m.policy, "fairness": m.fairness} for m in modes],
            "fairness_defaults": FairnessConfig().model_dump(),
        },
        "capacity": cap,
        "unloaded": baselines,
        "unloaded_interactive_turn_p95_s": unloaded_p95,
        "runs": runs,
        "aggregate": agg,
        "targets": verdicts,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _capacity_line(cap: dict[str, Any], cluster: Cluster) -> str:
    return (
        f"capacity: {60 * cap['sessions_per_s']:.1f} sessions/min ({cluster.engines} engines x {cluster.slots} slots; "
        f"{cap['slot_s_per_session']:.2f} slot-s per session; ~{cap['concurrent_sessions']:.1f} concurrent sessions; "
        f"interactive {100 * cap['interactive_share_of_demand']:.0f}% of demand)"
    )


def _progress(r: dict[str, Any], started: float) -> None:
    print(
        f"[{time.perf_counter() - started:6.0f}s] {r['label']:24}  "
        f"sessions {r['sessions']['completed']}/{r['sessions']['count']}  errors {r['calls']['errors']}  "
        f"wall {r['wall_s']:.0f}s  load {r['loadavg_before'][0]:.2f}",
        file=sys.stderr,
        flush=True,
    )


def table(result: dict[str, Any]) -> str:
    cap, p = result["capacity"], result["params"]
    u = result["unloaded_interactive_turn_p95_s"]
    lines = [
        f"mix {p['mix']}  {p['engines']} engines x {p['slots_per_engine']} slots  time_scale {p['time_scale']}  "
        f"capacity {60 * cap['sessions_per_s']:.1f} sessions/min = {cap['concurrent_sessions']:.1f} concurrent "
        f"(interactive {100 * cap['interactive_share_of_demand']:.0f}% of demand)  {p['sessions']} sessions/run  "
        "(simulated seconds)",
        HEAD,
        *(row(b, u) for b in result["unloaded"]),
        *(row(r, u) for r in result["runs"]),
        "",
        *(f"{'PASS' if v['ok'] else 'FAIL'}  {v['target']:72} {v['detail']}" for v in result["targets"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("error", "console")
    try:
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(bench(args))
        else:
            result = uvloop.run(bench(args))
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
