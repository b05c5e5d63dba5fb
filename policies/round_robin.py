"""round-robin: the baseline. Each request goes to the next candidate in turn, blind to load and
to sessions (every turn of a conversation may land on a different engine).

The counter is per policy instance (one per model route), so two models do not disturb each other's
rotation. Candidates arrive already filtered (healthy, with capacity, breaker closed): a deployment
that drops out is skipped and the rotation continues over the others.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from policies.base import BasePolicy

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


class RoundRobin(BasePolicy):
    def __init__(self, options: object = None, **_: object) -> None:
        self._next = itertools.count().__next__

    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment":
        return candidates[self._next() % len(candidates)]
