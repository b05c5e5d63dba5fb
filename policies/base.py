"""The Policy protocol: pick one deployment among candidates that already passed the filters.

Filtering (healthy, has capacity, breaker allows) happens in `policies.filters` before any policy
runs, so a policy only ranks. `on_start` / `on_finish` are called by the dispatcher when a request
starts on, and finishes with, the chosen deployment (finish = the response body ended).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.context import RequestContext


class Policy(Protocol):
    def choose(self, candidates: Sequence["Deployment"], ctx: "RequestContext") -> "Deployment": ...

    def on_start(self, deployment: "Deployment", ctx: "RequestContext") -> None: ...

    def on_finish(self, deployment: "Deployment", ctx: "RequestContext") -> None: ...


class BasePolicy:
    """Default no-op hooks, so a policy only writes `choose`.

    `weights`: the alias's weight per deployment name (`models[].deployments[].weight`, default 1);
    weights belong to the route, since one deployment may serve several aliases."""

    weights: "Mapping[str, float]" = {}

    def weight(self, d: "Deployment") -> float:
        return self.weights.get(d.name, 1.0)

    def on_start(self, deployment: "Deployment", ctx: "RequestContext") -> None:
        return None

    def on_finish(self, deployment: "Deployment", ctx: "RequestContext") -> None:
        return None
