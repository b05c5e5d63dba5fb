"""The Batch API's Prometheus metrics (one set per registry: Metrics.extension). Cost per team is
`switchyard_spend_usd_total` (the limits phase settles batch lines like any request)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gateway.metrics import Metrics


class BatchMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.m = metrics
        self.lines = Gauge(
            "switchyard_batch_lines_outstanding",
            "Batch API lines this process handed to the pipeline and that have not finished yet (waiting "
            "in the admission queue as class background, or running on an engine), by team.",
            ["team"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pending = Gauge(
            "switchyard_batch_lines_pending",
            "Batch API lines not run yet (all in-progress batches of the team, read from the store every poll).",
            ["team"],
            registry=r,
            multiprocess_mode="max",
        )
        self.finished = Counter(
            "switchyard_batch_lines_finished",
            "Batch API lines finished, by team and outcome (done | failed | expired | cancelled | duplicate: "
            "another worker had written the line already, this answer was dropped).",
            ["team", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "switchyard_batch_tokens",
            "Tokens of Batch API lines, by team and kind (prompt | completion).",
            ["team", "kind"],
            registry=r,
        )
        self.batches = Counter(
            "switchyard_batches",
            "Batches that reached a final status, by status.",
            ["status"],
            registry=r,
        )

    def held(self, team: str, delta: int) -> None:
        self.m._child(self.lines, team).inc(delta)

    def finish(self, team: str, outcome: str, n: int = 1) -> None:
        self.m._child(self.finished, team, outcome).inc(n)

    def used(self, team: str, prompt: int, completion: int) -> None:
        if prompt:
            self.m._child(self.tokens, team, "prompt").inc(prompt)
        if completion:
            self.m._child(self.tokens, team, "completion").inc(completion)
