"""The admission queue: when no deployment that could serve a request has room, the request waits
here and is dispatched the moment one does, instead of being refused.

Order: priority class first (interactive, batch, background); within a class, least attained
service of the request's session (gateway/admission/service.py) minus a credit for the time waited
(a linear mix, so the order of waiting requests never changes while they wait: a heap); a request
that has waited `promote_after_s` goes first in its class (no starvation). `fairness.policy = "fcfs"`
orders each class by arrival only.

Grants: whenever room may have appeared (an attempt ended and released its slot, a load reading
arrived, and every `tick_s` while anything waits, for breakers, cool-downs and quotas), `pump()` takes
the best waiter, lets its own candidate iterator choose a deployment (policies and filters as for
any request) and takes the slot FOR it (`Deployment.acquire`) before waking it, so nothing that
arrives meanwhile can take that slot and nothing is sent to a saturated engine. Requests that arrive
while others wait for the same deployments queue behind them.

Bounds: `max_queued` requests and `max_queued_bytes` of request bodies. Beyond either, the newest
request of the lowest class waiting (possibly the arriving one) is shed: 503 `queue_full` with
Retry-After. Past its class's `max_wait_s` (or the client's shorter `x-switchyard-max-wait`), a
request gets 503 `queue_timeout` with Retry-After. A client that disconnects leaves at once; a slot
granted to it is given back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.admission.config import CLASSES, AdmissionConfig
from gateway.errors import GatewayError, bad_request

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.admission.metrics import AdmissionMetrics
    from gateway.context import RequestContext
    from gateway.routing import ModelRoute
    from gateway.selection import Candidates

MAX_WAIT_HEADER = "x-switchyard-max-wait"


@dataclass(slots=True)
class Grant:
    route: "ModelRoute"
    deployment: "Deployment"


@dataclass(eq=False, slots=True)
class Waiter:
    ctx: "RequestContext"
    candidates: "Candidates"
    rank: int
    score: float  # attained service + credit x arrival time (= service - credit x wait, shifted): lower first
    seq: int
    enqueued: float
    size: int
    group: "_Group"
    future: "asyncio.Future[Grant]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    done: bool = False
    preempted: bool = False  # a lower class's attempt was cancelled for it (once per waiter)


class _Group:
    """Waiters that share a candidate set (the same alias and fallbacks)."""

    __slots__ = ("key", "names", "heaps", "fifos")

    def __init__(self, key: tuple[str, ...], names: frozenset[str]) -> None:
        self.key = key
        self.names = names  # deployment names any of these waiters could use
        self.heaps: list[list[tuple[float, int, Waiter]]] = [[] for _ in CLASSES]
        self.fifos: list[deque[Waiter]] = [deque() for _ in CLASSES]

    def head(self, now: float, promote_after: float) -> tuple[tuple[int, int, float, int], Waiter] | None:
        for rank in range(len(CLASSES)):
            fifo, heap = self.fifos[rank], self.heaps[rank]
            while fifo and fifo[0].done:
                fifo.popleft()
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            if not heap:
                continue
            oldest = fifo[0]
            if now - oldest.enqueued >= promote_after:  # waited too long: first in its class
                return (rank, 0, 0.0, oldest.seq), oldest
            score, seq, w = heap[0]
            return (rank, 1, score, seq), w
        return None


class AdmissionQueue:
    def __init__(self, cfg: AdmissionConfig, metrics: "AdmissionMetrics", service: Any, log: Any) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.service = service
        self.log = log
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.by_rank: list[deque[Waiter]] = [deque() for _ in CLASSES]  # arrival order, for shedding
        self.count = 0
        self.bytes = 0
        self._seq = itertools.count()
        self._ticker: asyncio.Task[None] | None = None
        self._pumping = False
        self._again = False

    # -- a request waits ---------------------------------------------------------------------------
    def has_waiters_for(self, candidates: "Candidates") -> bool:
        """Someone already waits for these deployments: a new request queues behind them."""
        if not self.count:
            return False
        group = self.groups.get(_key_of(candidates))
        return group is not None and any(group.heaps)

    def expected_wait(self, candidates: "Candidates") -> float:
        """Seconds until some candidate is expected to take requests: 0 when one is only full
        (slots free as answers end), else its breaker / cool-down / quota wait; inf when every
        candidate's engine is down."""
        best = math.inf
        for route in candidates.routes:
            for d in route.deployments:
                if not d.backend.healthy and (d.breaker is None or d.breaker.state != "closed"):
                    continue
                best = min(best, d.retry_in())
        return best

    async def wait(self, ctx: "RequestContext", candidates: "Candidates", session: str) -> Grant:
        """Wait for a deployment with room; raises GatewayError when shed or past the deadline."""
        cls = CLASSES[ctx.priority]
        deadline = self.cfg.max_wait(cls)
        asked = _max_wait_asked(ctx)
        if asked is not None:
            deadline = min(deadline, asked)
        fair = self.cfg.fairness
        now = time.monotonic()
        score = 0.0
        if fair.policy == "las":
            # service - credit x (time waited) orders the same at every instant as this static key
            score = await self.service.get(session) + fair.wait_credit_tokens_per_s * now
        else:
            score = now
        key = _key_of(candidates)
        group = self.groups.get(key)
        if group is None:
            names = frozenset(d.name for r in candidates.routes for d in r.deployments)
            group = self.groups[key] = _Group(key, names)
        w = Waiter(ctx, candidates, ctx.priority, score, next(self._seq), now, len(ctx.body), group)
        self._shed_for(w)
        heapq.heappush(group.heaps[w.rank], (w.score, w.seq, w))
        group.fifos[w.rank].append(w)
        self.by_rank[w.rank].append(w)
        self.count += 1
        self.bytes += w.size
        self.metrics.queued(ctx.model, cls, +1)
        self._start_ticker()
        self.pump()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result and drops
            # the cancellation when the client goes away in the instant of its grant, and the
            # request then goes on to the engine for an answer nobody reads.
            async with asyncio.timeout(deadline):
                grant = await asyncio.shield(w.future)
        except TimeoutError:
            self._leave(w, "expired")
            if w.future.done() and not w.future.cancelled() and w.future.exception() is None:
                return w.future.result()  # granted at the very last moment
            raise GatewayError(
                503,
                f"The request waited {deadline:g}s in the admission queue for model `{ctx.model}` (class {cls}) "
                "without a free deployment; retry shortly.",
                type="service_unavailable",
                code="queue_timeout",
                headers={"Retry-After": str(max(1, math.ceil(min(deadline, 30))))},
            ) from None
        except asyncio.CancelledError:  # the client went away: leave, and give back a granted slot
            self._leave(w, "cancelled")
            if w.future.done() and not w.future.cancelled() and w.future.exception() is None:
                self.give_back(w.future.result().deployment)
            else:
                w.future.cancel()
            raise
        self.metrics.waited(cls, time.monotonic() - w.enqueued)
        return grant

    def give_back(self, d: "Deployment") -> None:
        """A granted slot that will not be used."""
        d.release()
        self.on_release(d)

    def _leave(self, w: Waiter, outcome: str) -> None:
        if w.done:
            return
        w.done = True
        self.count -= 1
        self.bytes -= w.size
        self.metrics.queued(w.ctx.model, CLASSES[w.rank], -1)
        self.metrics.outcome(w.ctx.model, CLASSES[w.rank], outcome)

    def _shed_for(self, new: Waiter) -> None:
        """Make room for `new` within the bounds: shed the newest of the lowest class waiting."""
        while self.count + 1 > self.cfg.max_queued or self.bytes + new.size > self.cfg.max_queued_bytes:
            victim = self._newest_lowest()
            if victim is None or victim.rank <= new.rank:  # the arriving request is the newest of the lowest
                self.metrics.outcome(new.ctx.model, CLASSES[new.rank], "shed")
                raise _queue_full(new.ctx.model)
            self._leave(victim, "shed")
            victim.future.set_exception(_queue_full(victim.ctx.model))

    def _newest_lowest(self) -> Waiter | None:
        for rank in range(len(CLASSES) - 1, -1, -1):
            q = self.by_rank[rank]
            while q and q[-1].done:
                q.pop()
            if q:
                return q[-1]
        return None

    # -- room appears --------------------------------------------------------------------------------
    def on_release(self, d: "Deployment") -> None:
        if self.count:
            self.pump(d.name)

    def pump(self, only: str | None = None) -> None:
        """Grant free slots to the best waiters (see the module docstring)."""
        if self._pumping:  # a grant's side effects asked for another round
            self._again = True
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                self._pump_once(only)
                if not self._again:
                    break
                only = None
        finally:
            self._pumping = False

    def _pump_once(self, only: str | None) -> None:
        now = time.monotonic()
        promote = self.cfg.fairness.promote_after_s
        blocked: set[tuple[str, ...]] = set()
        while self.count:
            best: tuple[tuple[int, int, float, int], Waiter] | None = None
            for key, group in list(self.groups.items()):
                if key in blocked or (only is not None and only not in group.names):
                    continue
                head = group.head(now, promote)
                if head is None:
                    if not any(group.fifos):
                        del self.groups[key]
                    continue
                if best is None or head[0] < best[0]:
                    best = head
            if best is None:
                return
            w = best[1]
            found = w.candidates.peek()
            if found is None:  # nothing has room for this group: its other waiters wait too
                if not w.preempted and not self.cfg.preemptible(CLASSES[w.rank]):
                    w.preempted = self._preempt(w)
                blocked.add(w.group.key)
                continue
            route, d = found
            d.acquire()  # the slot is this waiter's from now on
            self._leave(w, "dispatched")
            w.future.set_result(Grant(route, d))

    def _preempt(self, w: Waiter) -> bool:
        """Cancel the youngest preemptible attempt (a Batch API line) on a full deployment `w` could
        use: its slot comes back when the cancelled attempt ends (on_release pumps again) and the
        line is run again later. At most one per waiter."""
        best: tuple[float, Any, "Deployment"] | None = None
        for route in w.candidates.routes:
            for d in route.deployments:
                if not d.preemptible or d.has_capacity() or not d.allows():
                    continue
                for task, started in d.preemptible.items():
                    if best is None or started > best[0]:
                        best = (started, task, d)
        if best is None:
            return False
        _, task, d = best
        del d.preemptible[task]
        task.cancel()
        return True

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        """While anything waits: breakers half-open, cool-downs end, quotas refill without an event."""
        while self.count:
            await asyncio.sleep(self.cfg.tick_s)
            self.pump()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass

    def snapshot(self) -> dict[str, Any]:
        """For /admin/deployments: waiting requests per class."""
        per_class = {c: 0 for c in CLASSES}
        for group in self.groups.values():
            for rank, fifo in enumerate(group.fifos):
                per_class[CLASSES[rank]] += sum(1 for w in fifo if not w.done)
        return {"waiting": self.count, "bytes": self.bytes, "by_class": per_class}


def _key_of(candidates: "Candidates") -> tuple[str, ...]:
    return tuple(r.alias for r in candidates.routes)


def _max_wait_asked(ctx: "RequestContext") -> float | None:
    raw = ctx.request_headers.get(MAX_WAIT_HEADER) if ctx.request_headers is not None else None
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise bad_request(f"{MAX_WAIT_HEADER} must be a number of seconds >= 0.", code="invalid_max_wait")
    return value


def _queue_full(model: str) -> GatewayError:
    return GatewayError(
        503,
        f"The admission queue is full; the request for model `{model}` was shed (lowest priority, newest first). "
        "Retry shortly.",
        type="service_unavailable",
        code="queue_full",
        headers={"Retry-After": "1"},
    )
