"""A three-state circuit breaker for one deployment: a pure state machine with an injectable clock.

closed -> open     the failure rate over a sliding time window reaches `failure_rate` with at least
                   `min_calls` calls in it, or `consecutive_failures` failures in a row.
open -> half_open  after the cool-down (`open_s`, times `open_multiplier` per repeated trip, capped
                   at `max_open_s`), or at once when an active health probe sees the backend
                   come back (`probe_recovered`).
half_open          admits at most `half_open_max_probes` requests at a time; `half_open_successes`
                   successes close it, one failure re-opens it (a repeated trip: longer cool-down).

Only upstream faults are failures (5xx, timeouts, connection errors, broken streams); the caller
decides what is one. A request is tracked by the ticket `start()` returns, so an answer that
arrives after the state moved on (a slow request started while closed) does not count as a probe.
No I/O, no asyncio: the dispatcher calls it, tests drive it with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.resilience_config import BreakerConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # the Prometheus gauge's value


class BreakerListener(Protocol):
    def transition(self, name: str, old: str, new: str) -> None: ...

    def rejected(self, name: str) -> None: ...


class CircuitBreaker:
    __slots__ = (
        "name",
        "cfg",
        "clock",
        "listener",
        "state",
        "generation",
        "opened_until",
        "trips",
        "consecutive",
        "probes_in_flight",
        "probe_successes",
        "_buckets",
        "_bucket_s",
    )

    def __init__(
        self,
        name: str,
        cfg: "BreakerConfig",
        clock: Callable[[], float] = time.monotonic,
        listener: BreakerListener | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = clock
        self.listener = listener
        self.state = CLOSED
        self.generation = 0  # bumped on every transition; tickets from older generations are stale
        self.opened_until = 0.0
        self.trips = 0  # consecutive trips without closing in between: grows the cool-down
        self.consecutive = 0
        self.probes_in_flight = 0
        self.probe_successes = 0
        # Sliding window: [bucket_index, calls, failures] per bucket, oldest first.
        self._bucket_s = max(cfg.window_s / 10, 1e-3)
        self._buckets: list[list[float]] = []

    # -- questions -------------------------------------------------------------------------------
    def allows(self) -> bool:
        """May a new request go to this deployment now? (Moves open -> half_open when due.)"""
        if not self.cfg.enabled:
            return True
        if self.state == OPEN:
            if self.clock() < self.opened_until:
                self._reject()
                return False
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN and self.probes_in_flight >= self.cfg.half_open_max_probes:
            self._reject()
            return False
        return True

    def retry_in(self) -> float:
        """Seconds until this breaker admits a probe again (0 when it admits now)."""
        if self.state == OPEN:
            return max(0.0, self.opened_until - self.clock())
        return 0.0

    def failure_rate(self) -> tuple[int, int]:
        """(calls, failures) in the sliding window."""
        self._expire()
        calls = sum(int(b[1]) for b in self._buckets)
        fails = sum(int(b[2]) for b in self._buckets)
        return calls, fails

    # -- a request's life ------------------------------------------------------------------------
    def start(self) -> int:
        """A request goes to the deployment; returns its ticket."""
        if self.state == HALF_OPEN:
            self.probes_in_flight += 1
        return self.generation

    def success(self, ticket: int) -> None:
        if not self.cfg.enabled or ticket != self.generation:
            return
        if self.state == HALF_OPEN:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            self.probe_successes += 1
            if self.probe_successes >= self.cfg.half_open_successes:
                self.trips = 0
                self._move(CLOSED)
            return
        self.consecutive = 0
        self._count(failed=False)

    def failure(self, ticket: int) -> None:
        if not self.cfg.enabled or ticket != self.generation:
            return
        if self.state == HALF_OPEN:
            self._trip()
            return
        if self.state != CLOSED:
            return
        self.consecutive += 1
        self._count(failed=True)
        calls, fails = self.failure_rate()
        if self.consecutive >= self.cfg.consecutive_failures or (
            calls >= self.cfg.min_calls and fails / calls >= self.cfg.failure_rate
        ):
            self._trip()

    def neutral(self, ticket: int) -> None:
        """The request ended without saying anything about the upstream's health (a client 4xx,
        the client went away): frees a half-open probe slot, counts nothing."""
        if ticket == self.generation and self.state == HALF_OPEN:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)

    def probe_recovered(self) -> None:
        """An active health probe saw the backend come back: skip the rest of the cool-down."""
        if self.state == OPEN:
            self._move(HALF_OPEN)

    # -- internals -------------------------------------------------------------------------------
    def _trip(self) -> None:
        self.trips += 1
        cool = min(self.cfg.max_open_s, self.cfg.open_s * self.cfg.open_multiplier ** (self.trips - 1))
        self.opened_until = self.clock() + cool
        self._move(OPEN)

    def _move(self, new: str) -> None:
        old, self.state = self.state, new
        self.generation += 1
        self.probes_in_flight = 0
        self.probe_successes = 0
        self.consecutive = 0
        if new == CLOSED:
            self._buckets.clear()
        if self.listener is not None:
            self.listener.transition(self.name, old, new)

    def _reject(self) -> None:
        if self.listener is not None:
            self.listener.rejected(self.name)

    def _count(self, failed: bool) -> None:
        idx = math.floor(self.clock() / self._bucket_s)
        self._expire(idx)
        if self._buckets and self._buckets[-1][0] == idx:
            bucket = self._buckets[-1]
        else:
            bucket = [idx, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _expire(self, idx: int | None = None) -> None:
        if idx is None:
            idx = math.floor(self.clock() / self._bucket_s)
        oldest = idx - 9  # ten buckets of window_s / 10
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.pop(0)

    def snapshot(self) -> dict[str, object]:
        calls, fails = self.failure_rate()
        return {
            "state": self.state,
            "retry_in_s": round(self.retry_in(), 3),
            "trips": self.trips,
            "consecutive_failures": self.consecutive,
            "window_calls": calls,
            "window_failures": fails,
            "half_open_probes_in_flight": self.probes_in_flight,
            "half_open_successes": self.probe_successes,
        }
