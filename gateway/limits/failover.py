"""Fail policy around the Redis store: no request hangs on a dead Redis.

Every Redis call is bounded by the client's socket timeout (`redis.timeout_s`, 0.25 s by default).
After a failure the store is considered down for `limits.retry_redis_after_s`: meanwhile requests
do not wait on Redis at all. While down, `fail_policy = "open"` admits through local in-memory
buckets and budgets (this process's share only), `"closed"` refuses with 503 `limits_unavailable`.
Each failure is logged and counted (switchyard_limits_store_errors_total).

Reconciliation (the Journal): spend settled on the fallback while Redis was away is summed per
(budget, model) and written to Redis once it answers again, as one batch with an id that Redis
remembers for a day (`<budget key>:d`), so a replay whose answer is lost and is sent again is added
once. A settle that failed against Redis for a request Redis admitted is kept and sent again; it
names its holder, so it too is applied once (store.py). The replay runs in the background after the
first successful Redis call, one at a time, in order: nothing waits for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.limits.store import (
    HOLD_S,
    Admission,
    BucketCheck,
    BudgetCheck,
    BudgetSettle,
    CounterCheck,
    Hold,
    MemoryStore,
    Spend,
)

_FAULTS = (RedisError, OSError, asyncio.TimeoutError)


def limits_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "Rate limits cannot be checked right now (shared store unreachable); retry shortly.",
        type="service_unavailable",
        code="limits_unavailable",
        headers={"Retry-After": "1"},
    )


_Settle = tuple[list[tuple[BucketCheck, float]], list[str], list[BudgetSettle], str]


@dataclass
class Journal:
    """What Redis has yet to be told (handed over to the next gateway by a reload)."""

    spend: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (key, model) -> usd, p, c, n, ttl
    sealed: tuple[str, list[tuple[str, str, int, int, int, int, int | None]]] | None = None  # (batch id, entries)
    settles: list[_Settle] = field(default_factory=list)  # settles that failed against Redis
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __bool__(self) -> bool:
        return bool(self.spend or self.sealed or self.settles)

    def add(self, g: BudgetSettle) -> None:
        if not g.model:
            return
        row = self.spend.setdefault((g.key, g.model), [0, 0, 0, 0, 0])
        row[0] += g.actual
        row[1] += g.prompt_tokens
        row[2] += g.completion_tokens
        row[3] += 1
        row[4] = max(row[4], g.ttl_s or 0)

    def seal(self) -> tuple[str, list[tuple[str, str, int, int, int, int, int | None]]] | None:
        """The batch to send: the one sent before and not acknowledged (same id), else what is new."""
        if self.sealed is None and self.spend:
            entries = [(k, m, *v[:4], v[4] or None) for (k, m), v in self.spend.items()]
            self.sealed, self.spend = (uuid.uuid4().hex, entries), {}  # type: ignore[assignment]
        return self.sealed


class _FallbackView:
    """The store a fallback admission settles through: the local store, and the journal for Redis."""

    def __init__(self, owner: "FailoverStore") -> None:
        self.owner = owner

    async def settle(
        self,
        buckets: list[tuple[BucketCheck, float]],
        counters: list[str],
        budgets: list[BudgetSettle],
        holder: str = "",
    ) -> list[int]:
        totals = await self.owner.fallback.settle(buckets, counters, budgets, holder)
        for g in budgets:
            self.owner.journal.add(g)
        return totals

    async def renew(self, holds: list[Hold], hold_s: float) -> None:
        await self.owner.fallback.renew(holds, hold_s)


class FailoverStore:
    def __init__(
        self,
        primary: Any,
        fallback: MemoryStore,
        fail_open: bool,
        retry_after_s: float,
        on_fault: Callable[[str, BaseException], None],
        clock: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.fail_open = fail_open
        self.retry_after_s = retry_after_s
        self.on_fault = on_fault
        self.clock = clock
        self.down_until = 0.0
        self.journal = journal if journal is not None else Journal()
        self._view = _FallbackView(self)
        self._replay: asyncio.Task[None] | None = None

    def _fault(self, op: str, e: BaseException) -> None:
        self.down_until = self.clock() + self.retry_after_s
        self.on_fault(op, e)

    def _degraded(self) -> Any:
        if not self.fail_open:
            raise limits_unavailable()
        return self.fallback

    def _up(self) -> None:
        """Redis answered: write back what it missed, in the background, one replay at a time."""
        if self.journal and (self._replay is None or self._replay.done()):
            self._replay = asyncio.get_running_loop().create_task(self._reconcile(), name="switchyard-limits-replay")

    async def reconciled(self) -> None:
        """Wait for the replay in progress, if any (tests, shutdown)."""
        if self._replay is not None:
            await asyncio.gather(self._replay, return_exceptions=True)

    async def _reconcile(self) -> None:
        j = self.journal
        async with j.lock:
            try:
                while j.settles:
                    buckets, counters, budgets, holder = j.settles[0]
                    await self.primary.settle(buckets, counters, budgets, holder)
                    j.settles.pop(0)
                while (batch := j.seal()) is not None:
                    await self.primary.replay(*batch)
                    j.sealed = None
            except _FAULTS as e:  # kept for the next time Redis answers
                self._fault("replay", e)

    async def admit(
        self,
        buckets: list[BucketCheck],
        counters: list[CounterCheck],
        budgets: list[BudgetCheck],
        holder: str = "",
        hold_s: float = HOLD_S,
    ) -> Admission:
        if self.clock() >= self.down_until:
            try:
                admission = await self.primary.admit(buckets, counters, budgets, holder, hold_s)
            except _FAULTS as e:
                self._fault("admit", e)
            else:
                admission.store = self  # settled through here, so a Redis failure then is counted too
                self._up()
                return admission
        admission = await self._degraded().admit(buckets, counters, budgets, holder, hold_s)
        if admission.ok:
            admission.store = self._view  # its spend is written to Redis once Redis is back
        return admission

    async def settle(
        self,
        buckets: list[tuple[BucketCheck, float]],
        counters: list[str],
        budgets: list[BudgetSettle],
        holder: str = "",
    ) -> list[int]:
        try:
            totals = await self.primary.settle(buckets, counters, budgets, holder)
        except _FAULTS as e:
            self._fault("settle", e)
            self.journal.settles.append((buckets, counters, budgets, holder))  # sent again when Redis is back
            return [0] * len(budgets)
        self._up()
        return totals

    async def renew(self, holds: list[Hold], hold_s: float) -> None:
        if self.clock() < self.down_until:
            return
        try:
            await self.primary.renew(holds, hold_s)
        except _FAULTS as e:
            self._fault("renew", e)

    async def spend(self, key: str) -> Spend:
        if self.clock() >= self.down_until:
            try:
                return await self.primary.spend(key)
            except _FAULTS as e:
                self._fault("spend", e)
        return await self.fallback.spend(key)

    async def close(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
            await asyncio.gather(self._replay, return_exceptions=True)
        await self.primary.close()
