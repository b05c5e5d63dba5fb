"""Fail policy around the Redis store: no request hangs on a dead Redis.

Every Redis call is bounded by the client's socket timeout (`redis.timeout_s`, 0.25 s by default).
After a failure the store is considered down for `limits.retry_redis_after_s`: meanwhile requests
do not wait on Redis at all. While down, `fail_policy = "open"` admits through local in-memory
buckets and budgets (this process's share only), `"closed"` refuses with 503 `limits_unavailable`.
Each failure is logged and counted (switchyard_limits_store_errors_total).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.limits.store import Admission, BucketCheck, BudgetCheck, BudgetSettle, CounterCheck, MemoryStore, Spend

_FAULTS = (RedisError, OSError, asyncio.TimeoutError)


def limits_unavailable() -> GatewayError:
    return GatewayError(503, "Rate limits cannot be checked right now (shared store unreachable); retry shortly.",
                        type="service_unavailable", code="limits_unavailable", headers={"Retry-After": "1"})


class FailoverStore:
    def __init__(self, primary: Any, fallback: MemoryStore, fail_open: bool, retry_after_s: float,
                 on_fault: Callable[[str, BaseException], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.fallback = fallback
        self.fail_open = fail_open
        self.retry_after_s = retry_after_s
        self.on_fault = on_fault
        self.clock = clock
        self.down_until = 0.0

    def _fault(self, op: str, e: BaseException) -> None:
        self.down_until = self.clock() + self.retry_after_s
        self.on_fault(op, e)

    def _degraded(self) -> Any:
        if not self.fail_open:
            raise limits_unavailable()
        return self.fallback

    async def admit(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                    budgets: list[BudgetCheck]) -> Admission:
        if self.clock() >= self.down_until:
            try:
                admission = await self.primary.admit(buckets, counters, budgets)
            except _FAULTS as e:
                self._fault("admit", e)
            else:
                admission.store = self  # settled through here, so a Redis failure then is counted too
                return admission
        return await self._degraded().admit(buckets, counters, budgets)

    async def settle(self, buckets: list[tuple[BucketCheck, float]], counters: list[str],
                     budgets: list[BudgetSettle]) -> list[int]:
        try:
            return await self.primary.settle(buckets, counters, budgets)
        except _FAULTS as e:
            self._fault("settle", e)
            return [0] * len(budgets)

    async def spend(self, key: str) -> Spend:
        if self.clock() >= self.down_until:
            try:
                return await self.primary.spend(key)
            except _FAULTS as e:
                self._fault("spend", e)
        return await self.fallback.spend(key)

    async def close(self) -> None:
        await self.primary.close()
