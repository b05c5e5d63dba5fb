"""Scheduler and prefix-cache rules, driven step by step without HTTP."""

from __future__ import annotations

from loadtest.engine import EngineConfig, EngineStats
from loadtest.engine.prefix_cache import PrefixCache
from loadtest.engine.scheduler import RUNNING, WAITING, Scheduler, Seq
from loadtest.engine.tokenize import block_hashes, count_tokens, render_chat


def make(kv_blocks: int, max_num_seqs: int = 8, preemption: bool = True):
    cfg = EngineConfig(kv_blocks=kv_blocks, block_size=4, max_num_seqs=max_num_seqs, preemption=preemption, itl_s=0.01)
    stats = EngineStats()
    return Scheduler(cfg, stats, PrefixCache(64)), stats


def seq(prompt: int, target: int = 100) -> Seq:
    return Seq([prompt], [[]], target, "length", arrival=0.0)


def enqueue(sched: Scheduler, *seqs: Seq) -> None:
    for s in seqs:
        s.state = WAITING
        sched.waiting.append(s)


async def test_admission_is_fcfs_and_needs_a_spare_block():
    sched, _ = make(kv_blocks=6)
    big, small = seq(prompt=20), seq(prompt=4)  # big needs 5 blocks + 1 spare
    enqueue(sched, seq(prompt=4), big, small)
    sched._admit()
    # first admitted (1 block); big does not fit (5 free < 6) and blocks small behind it
    assert len(sched.running) == 1 and list(sched.waiting) == [big, small]


async def test_max_num_seqs_limits_the_batch():
    sched, _ = make(kv_blocks=100, max_num_seqs=2)
    enqueue(sched, seq(4), seq(4), seq(4))
    sched._admit()
    assert len(sched.running) == 2 and len(sched.waiting) == 1


async def test_youngest_is_preempted_and_requeued_first():
    sched, stats = make(kv_blocks=6)
    old, young = seq(prompt=8), seq(prompt=8)
    enqueue(sched, old, young)
    sched._admit()  # 2 blocks each, 2 free
    old.generated = young.generated = 4  # both need a 4th block for the next token
    sched._reserve_next_token()  # old: 3 -> 4 blocks, young: 3 blocks, then none left
    assert old.state == RUNNING and old.blocks == 4
    assert young.state == WAITING and young.blocks == 0 and list(sched.waiting) == [young]
    assert stats.preempted == 1 and sched.used_blocks == 4


async def test_older_sequence_preempts_the_youngest():
    sched, stats = make(kv_blocks=4)
    old, young = seq(prompt=8), seq(prompt=4)
    enqueue(sched, old, young)
    sched._admit()  # old 2 blocks, young 1 block, 1 free
    old.generated = 4  # old needs 2 more blocks: takes the free one, then
    sched._reserve_next_token()  # preempts young to get the other
    assert old.blocks == 4 and sched.used_blocks == 4
    assert young.state == WAITING and young.blocks == 0 and stats.preempted == 1


async def test_no_preemption_reserves_the_whole_answer():
    sched, _ = make(kv_blocks=10, preemption=False)
    enqueue(sched, seq(prompt=8, target=12), seq(prompt=8, target=12))
    sched._admit()  # 5 blocks each: prompt + whole answer
    assert len(sched.running) == 2 and sched.used_blocks == 10
    for s in sched.running:
        s.generated = 11
    sched._reserve_next_token()
    assert len(sched.running) == 2


async def test_abort_frees_blocks_at_once():
    sched, stats = make(kv_blocks=10)
    a, b = seq(8), seq(8)
    enqueue(sched, a, b)
    sched._admit()
    sched.abort(a)
    assert sched.used_blocks == 2 and stats.running == 1 and a not in sched.running


def test_prefix_cache_chained_blocks_and_lru():
    cache = PrefixCache(capacity_blocks=3)
    shared = b"s" * 64
    a = block_hashes(shared + b"a" * 64, 16)
    b = block_hashes(shared + b"b" * 64, 16)
    assert a[0] == b[0] and a[1] != b[1]  # chained: same first block only
    assert block_hashes(b"x" * 64 + shared, 16)[1] != a[0]  # position matters
    cache.insert(a)
    assert cache.match(b, max_blocks=2) == 1
    assert cache.match(a, max_blocks=1) == 1  # capped: the last token is recomputed
    cache.insert(block_hashes(b"z" * 128, 16))  # evicts the least recently used
    assert len(cache) == 3 and cache.match(a, 2) < 2


def test_rendered_chat_shares_prefix():
    tools = [{"type": "function", "function": {"name": "f"}}]
    sys_msg = {"role": "system", "content": "rules " * 50}
    one = render_chat([sys_msg, {"role": "user", "content": "a"}], tools)
    two = render_chat([sys_msg, {"role": "user", "content": "b"}], tools)
    common = len(one) - 2 - len(b"<|end|>\n<|assistant|>\n")
    assert one[:common] == two[:common] and one != two
    assert count_tokens(b"12345") == 2
