"""weighted and session-affinity, on real Deployment objects."""

from __future__ import annotations

import math
import random
from collections import Counter

from gateway.metrics import Metrics
from policies import make_policy
from policies.options import SessionAffinityOptions
from policies.session_affinity import SessionAffinity
from policies.weighted import Weighted
from tests.policies.helpers import ctx, deployment


def test_weighted_splits_an_idle_pool_by_weight() -> None:
    heavy, light = deployment("heavy"), deployment("light")
    policy = Weighted(rng=random.Random(1), weights={"heavy/m": 3, "light/m": 1})
    picks = Counter(policy.choose([heavy, light], ctx()).name for _ in range(4000))
    assert 0.70 < picks["heavy/m"] / 4000 < 0.80


def test_weighted_shifts_traffic_away_from_a_busy_deployment() -> None:
    heavy, light = deployment("heavy"), deployment("light")
    for _ in range(8):
        heavy.acquire()  # 3 / 9 vs 1 / 1
    policy = Weighted(rng=random.Random(2), weights={"heavy/m": 3, "light/m": 1})
    picks = Counter(policy.choose([heavy, light], ctx()).name for _ in range(4000))
    assert picks["heavy/m"] / 4000 < 0.30


def test_same_session_same_deployment_and_sessions_spread() -> None:
    pool = [deployment(f"e{i}") for i in range(4)]
    policy = SessionAffinity()
    first = policy.choose(pool, ctx("agent-1"))
    assert all(policy.choose(pool, ctx("agent-1")) is first for _ in range(50))
    homes = Counter(policy.choose(pool, ctx(f"agent-{i}")).name for i in range(2000))
    assert len(homes) == 4 and all(300 < n < 700 for n in homes.values()), homes


def test_placement_is_stable_across_gateway_processes() -> None:
    """Consistent hashing: a second gateway (fresh policy) puts a session where the first did."""
    pool = [deployment(f"e{i}") for i in range(4)]
    a, b = SessionAffinity(), SessionAffinity()
    assert all(a.choose(pool, ctx(f"s{i}")) is b.choose(pool, ctx(f"s{i}")) for i in range(200))


def test_no_deployment_goes_above_c_times_the_average() -> None:
    pool = [deployment(f"e{i}") for i in range(4)]
    policy = SessionAffinity(SessionAffinityOptions(load_factor=1.25))
    for i in range(400):  # 400 requests still running, 10 hot sessions
        policy.choose(pool, ctx(f"hot-{i % 10}")).acquire()
    assert max(d.active for d in pool) <= math.ceil(1.25 * 400 / 4)


def test_session_moves_when_its_deployment_is_down_and_stays_moved() -> None:
    pool = [deployment(f"e{i}") for i in range(3)]
    metrics = Metrics()
    policy = make_policy("session-affinity", alias="chat", metrics=metrics)
    home = policy.choose(pool, ctx("agent-7"))
    survivors = [d for d in pool if d is not home]  # the filters dropped it: down, breaker open or full
    moved = policy.choose(survivors, ctx("agent-7"))
    assert moved is not home
    assert all(policy.choose(pool, ctx("agent-7")) is moved for _ in range(10))  # home is back: no move back
    assert metrics.session_moves.labels("chat")._value.get() == 1


def test_session_moves_when_its_deployment_is_over_the_load_bound() -> None:
    pool = [deployment(f"e{i}") for i in range(2)]
    policy = SessionAffinity()
    home = policy.choose(pool, ctx("s"))
    for _ in range(6):
        home.acquire()  # bound = ceil(1.25 * 7 / 2) = 5
    assert policy.choose(pool, ctx("s")) is not home


def test_without_a_session_the_least_active_deployment_serves() -> None:
    a, b = deployment("a"), deployment("b")
    a.acquire()
    assert SessionAffinity().choose([a, b], ctx(None)) is b
