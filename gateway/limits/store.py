"""The Store protocol (what the limits phase needs from shared state) and the in-memory store.

One `admit` per request checks every bucket, concurrency counter and budget at once and either
takes all of them or none (all-or-nothing, so a refused request leaves no trace). One `settle` at
the end corrects buckets to the real token count, releases the concurrency slots and turns the
budget reservation into the real spend. The Redis store (redis_store.py) does the same in Lua and
passes the same test suite (tests/limits/test_store.py, tests/limits/test_holders.py).

Reservations belong to their request, the *holder* (its request id): a concurrency slot is one
holder in the counter's set, a budget reservation one holder's amount, each with its own deadline
(`hold_s` after the admission). The request's settle releases them; a holder nobody settles (a
killed worker, a settle lost with Redis) expires at its deadline, pruned by the next admission of
that key, however busy the key stays. A live process renews the deadlines of its requests still
running (`renew`, see phase.py). A settle names its holder, so it is applied once: replayed after a
lost answer it does nothing; arriving after its reservation expired it still records the spend once
(the expired holder leaves a tombstone for `TOMBSTONE_S`).

Money is integer nano-USD (1e-9 USD): exact sums, and far below 2**53 for any real budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.limits.buckets import BucketState, adjusted, full_in, level_at, wait_for

NANO = 1_000_000_000
HOLD_S = 60.0  # default lifetime of an unrenewed reservation (limits.reservation_ttl_s)
TOMBSTONE_S = 86400  # an expired holder's settle is still accepted (once) this long


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
    """The real spend of one request on one budget; the reservation released is the holder's own.
    model "" = release only (the request never reached an upstream): no usage is recorded."""

    key: str
    actual: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttl_s: int | None


@dataclass(slots=True, frozen=True)
class Hold:
    """One request's reservations, to renew while it runs: its counter keys and budget keys."""

    holder: str
    counters: tuple[str, ...]
    budgets: tuple[str, ...]


@dataclass(slots=True)
class Spend:
    spent: int = 0  # nano-USD settled
    reserved: int = 0  # nano-USD held by requests in flight
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> usd_nano, prompt, completion, requests


class Store(Protocol):
    async def admit(
        self,
        buckets: list[BucketCheck],
        counters: list[CounterCheck],
        budgets: list[BudgetCheck],
        holder: str = "",
        hold_s: float = HOLD_S,
    ) -> Admission:
        """holder: the request's id, required with counters or budgets (what the settle names)."""
        ...

    async def settle(
        self,
        buckets: list[tuple[BucketCheck, float]],
        counters: list[str],
        budgets: list[BudgetSettle],
        holder: str = "",
    ) -> list[int]:
        """buckets: (bucket, delta units: + refund, - extra); returns each budget's spend after.
        Applied once per holder: a replayed settle changes nothing."""
        ...

    async def renew(self, holds: list[Hold], hold_s: float) -> None:
        """Push the deadlines of these (still running) requests' reservations `hold_s` ahead."""
        ...

    async def spend(self, key: str) -> Spend: ...

    async def close(self) -> None: ...


def _need_holder(holder: str, counters: list, budgets: list) -> None:
    if not holder and (counters or budgets):
        raise ValueError("an admission with counters or budgets needs its holder (the request id)")


class MemoryStore:
    """State of one process. `clock` is injectable (tests); `on_spend` sees every settled budget
    change (the SQLite ledger subscribes to make spend durable)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, on_spend: Callable[[BudgetSettle], None] | None = None
    ) -> None:
        self.clock = clock
        self.on_spend = on_spend
        self._buckets: dict[str, BucketState] = {}
        self._slots: dict[str, dict[str, float]] = {}  # counter key -> holder -> deadline
        self._spend: dict[str, Spend] = {}
        self._holds: dict[str, dict[str, tuple[int, float]]] = {}  # budget key -> holder -> (amount, deadline)
        self._tombs: dict[str, dict[str, float]] = {}  # budget key -> expired holder -> until
        self._next_expiry: dict[str, float] = {}  # key -> earliest deadline in it (prune only then)

    def _prune(self, key: str, now: float) -> None:
        if self._next_expiry.get(key, float("inf")) > now:
            return
        slots = self._slots.get(key)
        if slots is not None:
            for h in [h for h, d in slots.items() if d <= now]:
                del slots[h]
            self._set_next(key, slots.values())
            return
        holds = self._holds.get(key, {})
        tombs = self._tombs.setdefault(key, {})
        for h, (amount, deadline) in list(holds.items()):
            if deadline <= now:
                del holds[h]
                s = self._spend.get(key)
                if s is not None:
                    s.reserved = max(0, s.reserved - amount)
                tombs[h] = now + TOMBSTONE_S
        for h in [h for h, until in tombs.items() if until <= now]:
            del tombs[h]
        self._set_next(key, [d for _, d in holds.values()])

    def _set_next(self, key: str, deadlines: Iterable[float]) -> None:
        self._next_expiry[key] = min(deadlines, default=float("inf"))

    async def admit(
        self,
        buckets: list[BucketCheck],
        counters: list[CounterCheck],
        budgets: list[BudgetCheck],
        holder: str = "",
        hold_s: float = HOLD_S,
    ) -> Admission:
        return self.admit_now(buckets, counters, budgets, holder, hold_s)

    def admit_now(
        self,
        buckets: list[BucketCheck],
        counters: list[CounterCheck],
        budgets: list[BudgetCheck],
        holder: str = "",
        hold_s: float = HOLD_S,
    ) -> Admission:
        _need_holder(holder, counters, budgets)
        now = self.clock()
        levels = [level_at(self._buckets.get(b.key), now, b.rate, b.capacity) for b in buckets]
        resets = [full_in(x, c.rate, c.capacity) for x, c in zip(levels, buckets)]  # every refusal carries them
        for i, (b, level) in enumerate(zip(buckets, levels)):
            wait = wait_for(level, b.cost, b.rate, b.capacity)
            if wait > 0:
                return Admission(False, f"bucket:{i}", wait, levels, resets, self)
        for i, c in enumerate(counters):
            self._prune(c.key, now)
            if len(self._slots.get(c.key, ())) >= c.limit:
                return Admission(False, f"counter:{i}", 1.0, levels, resets, self)
        for i, g in enumerate(budgets):
            self._prune(g.key, now)
            s = self._spend.get(g.key)
            if g.hard is not None and (s.spent + s.reserved if s else 0) + g.amount > g.hard:
                return Admission(False, f"budget:{i}", 0.0, levels, resets, self)
        after = []
        for b, level in zip(buckets, levels):
            left = level - b.cost
            self._buckets[b.key] = BucketState(left, now)
            after.append(left)
        deadline = now + hold_s
        for c in counters:
            self._slots.setdefault(c.key, {})[holder] = deadline
            self._next_expiry[c.key] = min(self._next_expiry.get(c.key, float("inf")), deadline)
        for g in budgets:
            self._spend.setdefault(g.key, Spend()).reserved += g.amount
            self._holds.setdefault(g.key, {})[holder] = (g.amount, deadline)
            self._next_expiry[g.key] = min(self._next_expiry.get(g.key, float("inf")), deadline)
        return Admission(True, "", 0.0, after, [full_in(x, b.rate, b.capacity) for x, b in zip(after, buckets)], self)

    async def settle(
        self,
        buckets: list[tuple[BucketCheck, float]],
        counters: list[str],
        budgets: list[BudgetSettle],
        holder: str = "",
    ) -> list[int]:
        now = self.clock()
        for key in counters:
            self._slots.get(key, {}).pop(holder, None)
        fresh = True
        out = []
        for i, g in enumerate(budgets):
            s = self._spend.setdefault(g.key, Spend())
            apply = True
            if holder:
                held = self._holds.get(g.key, {}).pop(holder, None)
                if held is not None:
                    s.reserved = max(0, s.reserved - held[0])
                elif self._tombs.get(g.key, {}).pop(holder, None) is None:
                    apply = False  # settled before: a replay
            if i == 0:
                fresh = apply
            if apply and g.model:
                s.spent += g.actual
                add_model_usage(s, g)
                if self.on_spend is not None:
                    self.on_spend(g)
            out.append(s.spent)
        if fresh:
            for b, delta in buckets:
                if delta:
                    level = level_at(self._buckets.get(b.key), now, b.rate, b.capacity)
                    self._buckets[b.key] = BucketState(adjusted(level, delta, b.capacity), now)
        return out

    async def renew(self, holds: list[Hold], hold_s: float) -> None:
        deadline = self.clock() + hold_s
        for h in holds:
            for key in h.counters:
                slots = self._slots.get(key)
                if slots is not None and h.holder in slots:
                    slots[h.holder] = deadline
            for key in h.budgets:
                held = self._holds.get(key, {}).get(h.holder)
                if held is not None:
                    self._holds[key][h.holder] = (held[0], deadline)

    def load(self, key: str, spend: Spend) -> None:
        """Spend read back from the durable ledger at start."""
        self._spend[key] = spend

    async def spend(self, key: str) -> Spend:
        self._prune(key, self.clock())
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
