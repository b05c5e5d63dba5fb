"""A deployment: one upstream model on one backend, with the load the gateway itself put on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.base import Backend


@dataclass(eq=False, slots=True)
class Deployment:
    backend: Backend
    upstream_model: str
    weight: float = 1.0
    active: int = 0  # in-flight on this deployment; drops when the response body ends
    name: str = field(init=False)  # "backend/upstream-model": the label in metrics and logs

    def __post_init__(self) -> None:
        self.name = f"{self.backend.name}/{self.upstream_model}"

    def has_capacity(self) -> bool:
        limit = self.backend.max_concurrency
        return limit is None or self.backend.active < limit

    def acquire(self) -> None:
        self.active += 1
        self.backend.active += 1

    def release(self) -> None:
        self.active -= 1
        self.backend.active -= 1
