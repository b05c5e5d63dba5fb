"""Token-bucket arithmetic with a fake clock (the in-memory store; the Redis script is the same
arithmetic and runs the shared store suite in test_store.py)."""

from __future__ import annotations

import pytest

from gateway.limits.buckets import BucketState, adjusted, full_in, level_at, wait_for
from gateway.limits.store import BucketCheck, MemoryStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refill_is_linear_and_capped_at_capacity() -> None:
    s = BucketState(level=0.0, at=10.0)
    assert level_at(s, 10.5, rate=2.0, capacity=10.0) == 1.0
    assert level_at(s, 100.0, rate=2.0, capacity=10.0) == 10.0
    assert level_at(None, 0.0, rate=2.0, capacity=10.0) == 10.0  # a new bucket starts full


def test_wait_and_reset_arithmetic() -> None:
    assert wait_for(3.0, 5.0, rate=2.0, capacity=10.0) == 1.0
    assert wait_for(10.0, 50.0, rate=2.0, capacity=10.0) == 0.0  # bigger than the bucket: passes when full
    assert full_in(4.0, rate=2.0, capacity=10.0) == 3.0
    assert adjusted(9.0, 5.0, 10.0) == 10.0 and adjusted(2.0, -5.0, 10.0) == -3.0


async def test_requests_per_minute_with_fake_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rpm = BucketCheck("rpm", rate=1.0, capacity=3.0, cost=1)  # 60/min, burst 3
    results = [(await store.admit([rpm], [], [])).ok for _ in range(4)]
    assert results == [True, True, True, False]
    refused = await store.admit([rpm], [], [])
    assert refused.retry_after_s == pytest.approx(1.0)
    clock.now += 0.5
    assert not (await store.admit([rpm], [], [])).ok
    clock.now += 0.5
    assert (await store.admit([rpm], [], [])).ok
    assert not (await store.admit([rpm], [], [])).ok


async def test_large_request_takes_a_debt_that_later_requests_wait_out() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    tpm = BucketCheck("tpm", rate=10.0, capacity=100.0, cost=250)
    ok = await store.admit([tpm], [], [])
    assert ok.ok and ok.levels == [-150.0]
    small = BucketCheck("tpm", rate=10.0, capacity=100.0, cost=10)
    refused = await store.admit([small], [], [])
    assert not refused.ok and refused.retry_after_s == pytest.approx(16.0)
    clock.now += 16.0
    assert (await store.admit([small], [], [])).ok


async def test_settle_refunds_and_charges_extra() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    tpm = BucketCheck("tpm", rate=1.0, capacity=100.0, cost=80)
    assert (await store.admit([tpm], [], [])).levels == [20.0]
    await store.settle([(tpm, 50.0)], [], [])  # used 30 of the 80 reserved
    probe = BucketCheck("tpm", rate=1.0, capacity=100.0, cost=70)
    assert (await store.admit([probe], [], [])).levels == [0.0]
    await store.settle([(probe, -20.0)], [], [])  # used 90, 20 more than reserved
    assert not (await store.admit([BucketCheck("tpm", 1.0, 100.0, 1)], [], [])).ok
