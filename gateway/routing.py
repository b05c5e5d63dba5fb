"""Model aliases -> deployments + policy, built from config. Phase 6 (choose) lives here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.base import Backend
from backends.deployment import Deployment
from gateway.config import Config
from gateway.context import RequestContext
from gateway.errors import unavailable
from policies import make_policy
from policies.base import Policy
from policies.filters import available


@dataclass(eq=False, slots=True)
class ModelRoute:
    alias: str
    deployments: list[Deployment]
    policy: Policy

    def choose(self, ctx: RequestContext, exclude: frozenset[str] = frozenset()) -> Deployment:
        candidates = available(self.deployments, exclude)
        if not candidates:
            raise unavailable(
                f"No deployment of model `{self.alias}` can take a request now (all at capacity or down); retry shortly."
            )
        return self.policy.choose(candidates, ctx)


class Router:
    def __init__(self, routes: dict[str, ModelRoute]) -> None:
        self._routes = routes

    @classmethod
    def build(cls, config: Config, backends: dict[str, Backend], metrics: Any = None) -> "Router":
        routes = {}
        for m in config.models:
            deployments = [Deployment(backends[d.backend], d.model, d.weight) for d in m.deployments]
            routes[m.name] = ModelRoute(m.name, deployments, make_policy(m.policy, m.policy_options, alias=m.name, metrics=metrics))
        return cls(routes)

    def get(self, alias: str) -> ModelRoute | None:
        return self._routes.get(alias)

    def aliases(self) -> list[str]:
        return list(self._routes)

    def routes(self) -> list[ModelRoute]:
        return list(self._routes.values())
