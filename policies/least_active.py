"""least-active: the deployment with the fewest in-flight requests per unit of weight.

Score = (active + 1) / weight, lowest wins (Envoy's weighted least-request); ties are broken at
random so equal deployments share load instead of the first one taking every burst. `active` is the
gateway's own in-flight count, which drops when the response body ends, not when headers arrive.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from policies.base import BasePolicy

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


class LeastActive(BasePolicy):
    def __init__(
        self,
        options: object = None,
        rng: random.Random | None = None,
        *,
        weights: Mapping[str, float] | None = None,
        **_: object,
    ) -> None:
        self._rng = rng or random.Random()
        self.weights = weights or {}

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        if len(candidates) == 1:
            return candidates[0]
        best: list["Deployment"] = []
        best_score = float("inf")
        for d in candidates:
            score = (d.active + 1) / self.weight(d)
            if score < best_score:
                best_score, best = score, [d]
            elif score == best_score:
                best.append(d)
        return best[0] if len(best) == 1 else self._rng.choice(best)
