"""weighted: weighted random with a least-request bias, P(d) proportional to weight / (active + 1).

An idle pool splits traffic by weight (3:1 weights -> 75% / 25%), unlike least-active, which
always takes the heaviest idle deployment; a busy deployment's share drops with its in-flight count.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from policies.base import BasePolicy
from policies.options import NoOptions

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


class Weighted(BasePolicy):
    options_model = NoOptions

    def __init__(
        self,
        options: NoOptions | None = None,
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
        scores = [self.weight(d) / (d.active + 1) for d in candidates]
        return self._rng.choices(candidates, weights=scores)[0]
