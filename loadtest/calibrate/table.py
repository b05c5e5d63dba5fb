"""Per-policy figures of a swarm run, real beside simulated, and the two honesty checks:

- ranking: for every pair of policies the real run tells apart (by more than `tie`, relative), the
  simulated run orders them the same way; pairs the real run cannot tell apart are not judged;
- scale: each simulated figure within `factor` of the real one (sim / real in [1/factor, factor]).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import combinations

from loadtest.calibrate.agents import Record

TIE = 0.10
FACTOR = 2.0
# figure -> higher is better?
FIGURES = {"hit_rate": True, "ttft_p50_s": False, "ttft_mean_s": False, "turn_p50_s": False, "turn_mean_s": False}


@dataclass
class Row:
    hit_rate: float
    ttft_p50_s: float
    ttft_mean_s: float
    turn_p50_s: float
    turn_mean_s: float
    wall_s: float
    calls: int
    errors: int
    busiest_share: float = 0.0  # share of the calls the busiest engine served

    @classmethod
    def of(cls, rec: Record, hits: float, queries: float, runs: int = 1, per_engine: list[float] | None = None) -> Row:
        """Figures over all of a policy's calls; wall time per run."""
        return cls(
            hits / queries if queries else 0.0,
            statistics.median(rec.ttft_s),
            statistics.fmean(rec.ttft_s),
            statistics.median(rec.turn_s),
            statistics.fmean(rec.turn_s),
            rec.wall_s / runs,
            len(rec.turn_s),
            rec.errors,
            max(per_engine) / sum(per_engine) if per_engine and sum(per_engine) else 0.0,
        )


def disagreements(real: dict[str, Row], sim: dict[str, Row], figure: str, tie: float = TIE) -> list[str]:
    """Pairs of policies the real run orders clearly and the simulated run orders the other way."""
    out = []
    for a, b in combinations(real, 2):
        ra, rb = getattr(real[a], figure), getattr(real[b], figure)
        if abs(ra - rb) <= tie * max(abs(ra), abs(rb), 1e-9):
            continue
        sa, sb = getattr(sim[a], figure), getattr(sim[b], figure)
        if (ra < rb) != (sa < sb):
            out.append(f"{a} vs {b}")
    return out


def ranking(rows: dict[str, Row], figure: str) -> list[str]:
    return sorted(rows, key=lambda p: getattr(rows[p], figure), reverse=FIGURES[figure])


def factor(real: float, sim: float) -> float:
    if real <= 0 or sim <= 0:
        return float("inf") if real != sim else 1.0
    return max(sim / real, real / sim)


def markdown(real: dict[str, Row], sim: dict[str, Row]) -> str:
    head = (
        "| policy | prefix hit rate real / sim | TTFT p50 s real / sim | TTFT mean s real / sim "
        "| turn p50 s real / sim | turn mean s real / sim | wall s real / sim | busiest engine's share | errors |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for p in real:
        r, s = real[p], sim[p]
        rows.append(
            f"| {p} | {r.hit_rate:.2f} / {s.hit_rate:.2f} | {r.ttft_p50_s:.2f} / {s.ttft_p50_s:.2f} "
            f"| {r.ttft_mean_s:.2f} / {s.ttft_mean_s:.2f} | {r.turn_p50_s:.2f} / {s.turn_p50_s:.2f} "
            f"| {r.turn_mean_s:.2f} / {s.turn_mean_s:.2f} | {r.wall_s:.1f} / {s.wall_s:.1f} "
            f"| {r.busiest_share:.2f} / {s.busiest_share:.2f} | {r.errors} / {s.errors} |"
        )
    return head + "\n".join(rows) + "\n"


def verdict(real: dict[str, Row], sim: dict[str, Row], max_factor: float = FACTOR) -> dict[str, object]:
    """Per figure: both rankings, the disagreeing pairs and the worst sim/real factor."""
    out: dict[str, object] = {}
    for figure in FIGURES:
        worst = max(factor(getattr(real[p], figure), getattr(sim[p], figure)) for p in real)
        out[figure] = {
            "real_ranking": ranking(real, figure),
            "sim_ranking": ranking(sim, figure),
            "disagreements": disagreements(real, sim, figure),
            "worst_factor": round(worst, 2),
            "within_factor": worst <= max_factor,
        }
    return out
