"""Filters that run before any policy: only deployments that can take a request reach `choose`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.deployment import Deployment


def available(deployments: Sequence["Deployment"], exclude: frozenset[str] = frozenset()) -> list["Deployment"]:
    """Healthy deployments with spare capacity whose breaker admits a request and that are not in
    a 429 cool-down or over their own quota (backends[].limits), minus those already tried for this request.

    When no deployment is known healthy (probes may lag a restart), fall back to those with capacity:
    trying beats refusing on a stale probe.
    """
    with_room = [d for d in deployments if d.name not in exclude and d.has_capacity() and d.allows()]
    healthy = [d for d in with_room if d.backend.healthy]
    return healthy or with_room
