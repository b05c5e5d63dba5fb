"""The deployment registry: ONE Deployment per (backend, upstream model), shared by every alias that
routes to it.

A deployment is an engine serving one model, so its in-flight count, breaker, 429 cool-down, quota
and load belong to it, not to the alias that happened to pick it: two aliases on the same engine must
see each other's streams (least-active), trip one breaker and wait out one cool-down. Aliases hold
references (gateway/routing.py ModelRoute); per-alias choices (weights) live on the route.
"""

from __future__ import annotations

from collections.abc import Iterator

from backends.base import Backend
from backends.deployment import Deployment


class DeploymentRegistry:
    def __init__(self, backends: dict[str, Backend]) -> None:
        self._backends = backends
        self._by_name: dict[str, Deployment] = {}

    def get(self, backend: str, upstream_model: str) -> Deployment:
        """The deployment of `upstream_model` on `backend`, created on first use."""
        name = f"{backend}/{upstream_model}"
        d = self._by_name.get(name)
        if d is None:
            d = self._by_name[name] = Deployment(self._backends[backend], upstream_model)
        return d

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def named(self, name: str) -> Deployment | None:
        return self._by_name.get(name)

    def on_backend(self, backend: Backend) -> list[Deployment]:
        return [d for d in self._by_name.values() if d.backend is backend]
