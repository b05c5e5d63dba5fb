"""The circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

from backends.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.resilience_config import BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Events:
    def __init__(self) -> None:
        self.transitions: list[tuple[str, str]] = []
        self.rejections = 0

    def transition(self, name: str, old: str, new: str) -> None:
        self.transitions.append((old, new))

    def rejected(self, name: str) -> None:
        self.rejections += 1


def make(**cfg: object) -> tuple[CircuitBreaker, Clock, Events]:
    clock, events = Clock(), Events()
    return CircuitBreaker("e0/m", BreakerConfig(**cfg), clock, events), clock, events


def fail(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.failure(b.start())


def succeed(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.success(b.start())


def test_consecutive_failures_open_it() -> None:
    b, _, ev = make(consecutive_failures=3, min_calls=100)
    fail(b, 2)
    succeed(b)  # a success resets the streak
    fail(b, 2)
    assert b.state == CLOSED and b.allows()
    fail(b)
    assert b.state == OPEN and not b.allows()
    assert ev.transitions == [(CLOSED, OPEN)] and ev.rejections == 1


def test_failure_rate_needs_min_calls() -> None:
    b, _, _ = make(consecutive_failures=100, min_calls=10, failure_rate=0.5)
    for _ in range(4):
        succeed(b)
        fail(b)
    assert b.state == CLOSED  # 50% but only 8 calls
    succeed(b)
    fail(b)
    assert b.state == OPEN  # 5 of 10


def test_window_slides_old_failures_out() -> None:
    b, clock, _ = make(consecutive_failures=100, min_calls=4, failure_rate=0.5, window_s=10)
    fail(b)
    succeed(b)
    fail(b)
    succeed(b, 2)
    clock.t += 11  # the window moved past all of them
    assert b.failure_rate() == (0, 0)
    succeed(b)
    fail(b)
    succeed(b)
    assert b.state == CLOSED


def test_open_half_open_close_cycle_and_probe_cap() -> None:
    b, clock, ev = make(consecutive_failures=1, open_s=5, half_open_max_probes=1, half_open_successes=2)
    fail(b)
    assert b.state == OPEN and abs(b.retry_in() - 5) < 1e-9
    clock.t += 4.9
    assert not b.allows()
    clock.t += 0.2
    assert b.allows() and b.state == HALF_OPEN
    probe = b.start()
    assert not b.allows()  # one probe at a time
    b.success(probe)
    assert b.state == HALF_OPEN and b.allows()
    b.success(b.start())
    assert b.state == CLOSED
    assert ev.transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_half_open_failure_reopens_with_growing_capped_cool_down() -> None:
    b, clock, _ = make(consecutive_failures=1, open_s=2, open_multiplier=3, max_open_s=10)
    fail(b)
    cools = []
    for _ in range(4):
        cools.append(round(b.retry_in(), 6))
        clock.t += b.retry_in()
        assert b.allows() and b.state == HALF_OPEN
        fail(b)
        assert b.state == OPEN
    assert cools == [2, 6, 10, 10]
    clock.t += b.retry_in()
    assert b.allows()
    succeed(b, 2)
    assert b.state == CLOSED
    fail(b)  # trips counted afresh after closing
    assert round(b.retry_in(), 6) == 2


def test_stale_tickets_do_not_count() -> None:
    b, clock, _ = make(consecutive_failures=1, open_s=1, half_open_successes=1)
    slow = b.start()  # started while closed, answers after the state moved on
    fail(b)
    clock.t += 1
    assert b.allows() and b.state == HALF_OPEN
    b.success(slow)
    assert b.state == HALF_OPEN  # not a probe
    probe = b.start()
    b.neutral(probe)  # a client 4xx: frees the slot, decides nothing
    assert b.state == HALF_OPEN and b.allows()
    b.success(b.start())
    assert b.state == CLOSED


def test_probe_recovered_skips_the_cool_down() -> None:
    b, _, _ = make(consecutive_failures=1, open_s=60)
    fail(b)
    assert not b.allows()
    b.probe_recovered()
    assert b.state == HALF_OPEN and b.allows()


def test_disabled_breaker_always_allows() -> None:
    b, _, _ = make(enabled=False, consecutive_failures=1)
    fail(b, 10)
    assert b.state == CLOSED and b.allows()
