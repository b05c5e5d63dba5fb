"""Choosing where an attempt goes: the request's candidate deployments, in order.

    untried deployments of the alias -> untried ones of each fallback alias, in order ->
    deployments already tried (alias first, then fallbacks)

Each step is the route's policy choosing among the deployments its filters let through
(policies/filters.py: healthy, room, breaker, 429 cool-down, quota wait). A deployment quota
(backends[].limits) is one more filter, applied after the policy's choice because taking it costs a
store call: a refusal marks the deployment (excluded for the rest of this request) and the choice
is made again. Nothing here raises to signal "try the next one"; `next()` returns None when no
deployment can take the request now, and `refusal()` says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backends.deployment import Deployment
from gateway.admission.config import CLASSES
from gateway.context import RequestContext
from gateway.errors import GatewayError, unavailable
from gateway.limits.deployment_quota import QuotaCharge, RequestQuota, quota_blocked
from gateway.routing import ModelRoute

if TYPE_CHECKING:
    from gateway.runtime import Gateway


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Pick:
    route: ModelRoute
    deployment: Deployment
    charge: QuotaCharge | None  # taken from the deployment's quota (None: it has none)
    acquired: bool = False  # its slot is already taken for this request (granted by the admission queue)


class Candidates:
    """One request's candidate deployments across its alias and fallbacks."""

    def __init__(self, ctx: RequestContext, gw: "Gateway") -> None:
        assert ctx.route is not None
        self.ctx = ctx
        fallbacks = gw.resilience.model(ctx.route.alias).fallbacks
        self.routes = [ctx.route] + [r for r in (gw.router.get(a) for a in fallbacks) if r is not None]
        self.tried: set[str] = set()
        quotas = gw.quotas
        self.quota = RequestQuota(quotas, ctx) if quotas is not None and quotas.covers(self.routes) else None
        # ctx.local_only (a Batch API line): remote deployments never take it.
        self.remote: frozenset[str] = (
            frozenset(d.name for r in self.routes for d in r.deployments if not d.backend.local)
            if ctx.local_only
            else _NONE
        )
        # [admission.classes.<class>].reserve_slots: a low class (the Batch API's lines) leaves that
        # many slots of each deployment free for higher classes.
        self.reserve = gw.config.admission.reserve(CLASSES[ctx.priority])

    def _choose(self, exclude: frozenset[str]) -> tuple[ModelRoute, Deployment] | None:
        if self.remote:
            exclude = exclude | self.remote
        if self.reserve:
            exclude = exclude | self._reserved()
        for route in self.routes:
            d = route.pick(self.ctx, exclude)
            if d is not None:
                return route, d
        return None

    def _reserved(self) -> frozenset[str]:
        """Deployments whose free slots are all reserved for higher classes than this request's."""
        r = self.reserve
        return frozenset(
            d.name
            for route in self.routes
            for d in route.deployments
            if (limit := d.backend.max_concurrency) is not None and limit > r and d.backend.active >= limit - r
        )

    def peek(self) -> tuple[ModelRoute, Deployment] | None:
        """The deployment `next()` would try first (no quota taken)."""
        blocked = frozenset(self.quota.blocked) if self.quota is not None and self.quota.blocked else _NONE
        if not self.tried:
            return self._choose(blocked)
        for exclude in (blocked | self.tried, blocked):
            found = self._choose(exclude)
            if found is not None:
                return found
        return None

    async def next(self, *, untried_only: bool = False) -> Pick | None:
        """The next deployment to try, its quota taken and marked tried; None when none can take
        the request now. `untried_only`: never one already tried (a hedge's second copy)."""
        while True:
            blocked = frozenset(self.quota.blocked) if self.quota is not None and self.quota.blocked else _NONE
            if untried_only:
                found = self._choose(blocked | self.tried)
            else:
                found = self.peek()
            if found is None:
                return None
            route, d = found
            charge = None
            if self.quota is not None:
                ok, charge = await self.quota.take(d)
                if not ok:  # over its quota: excluded for this request, choose again
                    continue
            self.tried.add(d.name)
            return Pick(route, d, charge)

    def forget_quota_refusals(self) -> None:
        if self.quota is not None:
            self.quota.blocked.clear()

    async def claim(self, route: ModelRoute, d: Deployment) -> Pick | None:
        """`d` (chosen for this request by the admission queue, its slot already taken): its quota
        taken and marked tried; None when it is over its quota."""
        charge = None
        if self.quota is not None:
            ok, charge = await self.quota.take(d)
            if not ok:
                return None
        self.tried.add(d.name)
        return Pick(route, d, charge, acquired=True)

    def cool_down_wait(self) -> float | None:
        """Seconds until the first deployment whose only obstacle is a Retry-After cool-down
        (breaker closed) may take requests again; None when none is cooling down."""
        now = time.monotonic()
        waits = [
            d.cool_until - now
            for r in self.routes
            for d in r.deployments
            if d.cool_until > now and (d.breaker is None or d.breaker.state == "closed")
        ]
        return min(waits) if waits else None

    def retry_in(self) -> float:
        """Seconds until some deployment may take requests again (breaker, cool-down, quota)."""
        return min((d.retry_in() for r in self.routes for d in r.deployments), default=1.0)

    def refusal(self) -> GatewayError:
        """Nothing can serve the request now: 429 when deployments wait on their own quota, else 503."""
        assert self.ctx.route is not None
        wait = self.retry_in()
        if self.quota is not None and (self.quota.blocked or quota_blocked(self.routes)):
            return self.quota.refusal(self.ctx.route.alias, wait)
        return unavailable(
            f"No deployment of model `{self.ctx.route.alias}` (or its fallbacks) can take a request now "
            "(all down, failing or at capacity); retry shortly.",
            retry_after=max(1.0, wait),
        )
