"""The Store protocol (what the limits phase needs from shared state) and the in-memory store.

One `admit` per request checks every bucket, concurrency counter and budget at once and either
takes all of them or none (all-or-nothing, so a refused request leaves no trace). One `settle` at
the end corrects buckets to the real token count, releases the concurrency slots and turns the
budget reservation into the real spend. The Redis store (redis_store.py) does the same in Lua and
passes the same test suite (tests/limits/test_store.py).

Money is integer nano-USD (1e-9 USD): exact sums, and far below 2**53 for any real budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from gateway.limits.buckets import BucketState, adjusted, full_in, level_at, wait_for

NANO = 1_000_000_000


@dataclass(slots=True, frozen=True)
class BucketCheck:
    key: str
    rate: float  # units per second
    capacity: float
    cost: float


@dataclass(slots=True, frozen=True)
class CounterCheck:
    key: str
    limit: int


@dataclass(slots=True, frozen=True)
class BudgetCheck:
    key: str
    hard: int | None  # nano-USD; None = tracked, never refused
    amount: int  # nano-USD reserved
    ttl_s: int | None  # how long the period's record lives; None = forever


@dataclass(slots=True)
class Admission:
    ok: bool
    failed: str = ""  # "bucket:<i>" | "counter:<i>" | "budget:<i>" when refused
    retry_after_s: float = 0.0
    levels: list[float] = field(default_factory=list)  # each bucket's level after admission
    resets: list[float] = field(default_factory=list)  # each bucket's seconds until full
    store: "Store | None" = None  # the store that admitted (the fallback when Redis was down)


@dataclass(slots=True, frozen=True)
class BudgetSettle:
    key: str
    reserved: int
    actual: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttl_s: int | None


@dataclass(slots=True)
class Spend:
    spent: int = 0  # nano-USD settled
    reserved: int = 0  # nano-USD held by requests in flight
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> usd_nano, prompt, completion, requests


class Store(Protocol):
    async def admit(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                    budgets: list[BudgetCheck]) -> Admission: ...

    async def settle(self, buckets: list[tuple[BucketCheck, float]], counters: list[str],
                     budgets: list[BudgetSettle]) -> list[int]:
        """buckets: (bucket, delta units: + refund, - extra); returns each budget's spend after."""
        ...

    async def spend(self, key: str) -> Spend: ...

    async def close(self) -> None: ...


class MemoryStore:
    """State of one process. `clock` is injectable (tests); `on_spend` sees every settled budget
    change (the SQLite ledger subscribes to make spend durable)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_spend: Callable[[BudgetSettle], None] | None = None) -> None:
        self.clock = clock
        self.on_spend = on_spend
        self._buckets: dict[str, BucketState] = {}
        self._counters: dict[str, int] = {}
        self._spend: dict[str, Spend] = {}

    async def admit(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                    budgets: list[BudgetCheck]) -> Admission:
        return self.admit_now(buckets, counters, budgets)

    def admit_now(self, buckets: list[BucketCheck], counters: list[CounterCheck],
                  budgets: list[BudgetCheck]) -> Admission:
        now = self.clock()
        levels = [level_at(self._buckets.get(b.key), now, b.rate, b.capacity) for b in buckets]
        for i, (b, level) in enumerate(zip(buckets, levels)):
            wait = wait_for(level, b.cost, b.rate, b.capacity)
            if wait > 0:
                return Admission(False, f"bucket:{i}", wait, levels, [full_in(x, c.rate, c.capacity) for x, c in zip(levels, buckets)], self)
        for i, c in enumerate(counters):
            if self._counters.get(c.key, 0) >= c.limit:
                return Admission(False, f"counter:{i}", 1.0, levels, [], self)
        for i, g in enumerate(budgets):
            s = self._spend.get(g.key)
            if g.hard is not None and (s.spent + s.reserved if s else 0) + g.amount > g.hard:
                return Admission(False, f"budget:{i}", 0.0, levels, [], self)
        after = []
        for b, level in zip(buckets, levels):
            left = level - b.cost
            self._buckets[b.key] = BucketState(left, now)
            after.append(left)
        for c in counters:
            self._counters[c.key] = self._counters.get(c.key, 0) + 1
        for g in budgets:
            self._spend.setdefault(g.key, Spend()).reserved += g.amount
        return Admission(True, "", 0.0, after, [full_in(x, b.rate, b.capacity) for x, b in zip(after, buckets)], self)

    async def settle(self, buckets: list[tuple[BucketCheck, float]], counters: list[str],
                     budgets: list[BudgetSettle]) -> list[int]:
        now = self.clock()
        for b, delta in buckets:
            if delta:
                level = level_at(self._buckets.get(b.key), now, b.rate, b.capacity)
                self._buckets[b.key] = BucketState(adjusted(level, delta, b.capacity), now)
        for key in counters:
            self._counters[key] = max(0, self._counters.get(key, 0) - 1)
        out = []
        for g in budgets:
            s = self._spend.setdefault(g.key, Spend())
            s.reserved = max(0, s.reserved - g.reserved)
            s.spent += g.actual
            add_model_usage(s, g)
            out.append(s.spent)
            if self.on_spend is not None:
                self.on_spend(g)
        return out

    def load(self, key: str, spend: Spend) -> None:
        """Spend read back from the durable ledger at start."""
        self._spend[key] = spend

    async def spend(self, key: str) -> Spend:
        s = self._spend.get(key)
        return Spend(s.spent, s.reserved, {m: dict(u) for m, u in s.by_model.items()}) if s else Spend()

    async def close(self) -> None:
        return None


def add_model_usage(s: Spend, g: BudgetSettle) -> None:
    u = s.by_model.setdefault(g.model, {"usd_nano": 0, "prompt_tokens": 0, "completion_tokens": 0, "requests": 0})
    u["usd_nano"] += g.actual
    u["prompt_tokens"] += g.prompt_tokens
    u["completion_tokens"] += g.completion_tokens
    u["requests"] += 1
