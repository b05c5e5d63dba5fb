"""prefix-aware and local-first, on real Deployment objects with load readings."""

from __future__ import annotations

import random

from backends.load_signals import Load
from gateway.metrics import Metrics
from policies import make_policy
from policies.local_first import LocalFirst
from policies.options import LocalFirstOptions, PrefixAwareOptions
from policies.prefix_aware import PrefixAware, block_hashes, prompt_bytes
from tests.policies.helpers import ctx, deployment, with_reading

SYSTEM = {"role": "system", "content": "You are a careful coding agent. " * 40}
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]


def conversation(agent: int, turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": f"Agent {agent}. " + "Plan the task step by step. " * 40}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"step {t}: " + "look at the file and report. " * 10})
        msgs.append({"role": "assistant", "content": f"done with step {t}. " * 10})
    msgs.append({"role": "user", "content": "next"})
    return msgs


def test_block_hashes_share_the_common_prefix_only() -> None:
    a = block_hashes(prompt_bytes({"tools": TOOLS, "messages": [SYSTEM, {"role": "user", "content": "a" * 300}]}), 64)
    b = block_hashes(prompt_bytes({"tools": TOOLS, "messages": [SYSTEM, {"role": "user", "content": "b" * 300}]}), 64)
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert common >= len(prompt_bytes({"tools": TOOLS, "messages": [SYSTEM]})) // 64 - 1
    assert a[:common] == b[:common] and a[common:] != b[common:]


def test_a_conversation_stays_where_its_prefix_is() -> None:
    pool = [deployment(f"e{i}") for i in range(4)]
    policy = PrefixAware(rng=random.Random(0))
    home = policy.choose(pool, ctx(messages=conversation(1, 0)))
    for turn in range(1, 8):
        other = pool[(pool.index(home) + 1) % 4]
        other.acquire()  # small load differences do not pull the conversation away
        assert policy.choose(pool, ctx(messages=conversation(1, turn))) is home


def test_new_prefixes_spread_over_the_pool() -> None:
    pool = [deployment(f"e{i}") for i in range(4)]
    policy = PrefixAware(rng=random.Random(0))
    for agent in range(8):
        policy.choose(pool, ctx(messages=conversation(agent, 0))).acquire()
    assert sorted(d.active for d in pool) == [2, 2, 2, 2]


def test_imbalance_overrides_the_cache() -> None:
    pool = [deployment(f"e{i}") for i in range(2)]
    metrics = Metrics()
    policy = make_policy(
        "prefix-aware", {"balance_abs_threshold": 4, "balance_rel_threshold": 1.5}, alias="chat", metrics=metrics
    )
    home = policy.choose(pool, ctx(messages=conversation(1, 1)))
    for _ in range(5):
        home.acquire()  # 5 vs 0: imbalanced
    assert policy.choose(pool, ctx(messages=conversation(1, 2))) is not home
    assert metrics.prefix_routing.labels("chat", "balance")._value.get() == 1
    assert metrics.prefix_routing.labels("chat", "spread")._value.get() == 1


def test_forgotten_after_ttl() -> None:
    now = [0.0]
    pool = [deployment(f"e{i}") for i in range(2)]
    policy = PrefixAware(PrefixAwareOptions(ttl_s=10), clock=lambda: now[0])
    hashes = block_hashes(prompt_bytes({"messages": conversation(1, 2)}), 256)
    policy.choose(pool, ctx(messages=conversation(1, 2)))
    assert policy.matches(hashes)
    now[0] = 11
    assert policy.matches(hashes) == {}


def test_local_first_stays_local_until_every_local_engine_is_saturated() -> None:
    l0, l1, remote = deployment("l0"), deployment("l1"), deployment("api", local=False, kind="openai")
    metrics = Metrics()
    policy = make_policy("local-first", alias="llama", metrics=metrics)
    with_reading(l0, Load(waiting=3, running=8))  # queueing: saturated
    with_reading(l1, Load(waiting=0, running=8, kv_usage=0.5))
    assert {policy.choose([l0, l1, remote], ctx()).name for _ in range(20)} == {"l1/m"}
    with_reading(l1, Load(waiting=0, running=8, kv_usage=0.95))  # KV nearly full: saturated too
    assert policy.choose([l0, l1, remote], ctx()) is remote
    assert metrics.spillover.labels("llama")._value.get() == 1
    with_reading(l0, Load(waiting=0, running=2))  # recovered: back to local at once
    assert policy.choose([l0, l1, remote], ctx()) is l0
    assert metrics.spillover.labels("llama")._value.get() == 1


def test_local_first_counts_a_stale_reading_as_saturated() -> None:
    now = [0.0]
    local, remote = deployment("l0"), deployment("api", local=False, kind="openai")
    with_reading(local, Load(waiting=0, running=1), clock=lambda: now[0])
    policy = LocalFirst(LocalFirstOptions())
    assert policy.choose([local, remote], ctx()) is local
    now[0] = 10  # no reading for 10 s (stale after 3 s)
    assert policy.choose([local, remote], ctx()) is remote


def test_local_first_queues_locally_when_nothing_remote_can_serve() -> None:
    l0, l1 = deployment("l0"), deployment("l1")
    with_reading(l0, Load(waiting=5, running=8))
    with_reading(l1, Load(waiting=1, running=8))
    assert LocalFirst().choose([l0, l1], ctx()) is l1


def test_local_first_options_threshold_and_then_policy() -> None:
    local, remote = deployment("l0"), deployment("api", local=False, kind="openai")
    with_reading(local, Load(waiting=2, running=8))
    policy = make_policy("local-first", {"max_waiting": 4, "then": "weighted"})
    assert policy.choose([local, remote], ctx()) is local
