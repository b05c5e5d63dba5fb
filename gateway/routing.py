"""Model aliases -> deployments + policy, built from config.

Deployments come from the DeploymentRegistry (one object per backend and upstream model); a route
holds references to them plus what is the alias's own: its policy (and the policy's state) and its
weight for each deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.deployment import Deployment
from backends.registry import DeploymentRegistry
from gateway.config import Config
from gateway.context import RequestContext
from policies import make_policy
from policies.base import Policy
from policies.filters import available


@dataclass(eq=False, slots=True)
class ModelRoute:
    alias: str
    deployments: list[Deployment]
    policy: Policy
    weights: dict[str, float] = field(default_factory=dict)  # deployment name -> this alias's weight

    def pick(self, ctx: RequestContext, exclude: frozenset[str] = frozenset()) -> Deployment | None:
        """The policy's choice among the deployments that can take a request now (filters first:
        healthy, room, breaker, cool-down, quota), minus `exclude`, narrowed by another API's
        request to where it can go (a pass-through follow-up's deployment); None when none can."""
        candidates = available(self.deployments, exclude)
        if ctx.api is not None and candidates:  # another API's routing hint (gateway/apis/call.py)
            candidates = list(ctx.api.narrow(candidates))
        return self.policy.choose(candidates, ctx) if candidates else None


class Router:
    def __init__(self, routes: dict[str, ModelRoute], registry: DeploymentRegistry) -> None:
        self._routes = routes
        self.deployments = registry

    @classmethod
    def build(cls, config: Config, registry: DeploymentRegistry, metrics: Any = None) -> "Router":
        routes = {}
        for m in config.models:
            deployments = [registry.get(d.backend, d.model) for d in m.deployments]
            weights = {dep.name: d.weight for dep, d in zip(deployments, m.deployments)}
            policy = make_policy(m.policy, m.policy_options, alias=m.name, metrics=metrics, weights=weights)
            routes[m.name] = ModelRoute(m.name, deployments, policy, weights)
        return cls(routes, registry)

    def get(self, alias: str) -> ModelRoute | None:
        return self._routes.get(alias)

    def aliases(self) -> list[str]:
        return list(self._routes)

    def routes(self) -> list[ModelRoute]:
        return list(self._routes.values())
