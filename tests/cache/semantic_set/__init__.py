"""A labelled set for the semantic cache, written apart from the guards' own tests
(tests/cache/pairs.py and test_units.py), split once by hash into `dev` (a third: what guard and
threshold choices may be looked at against) and `test` (two thirds: only measured, see
BENCHMARKS.md). `python -m tests.cache.semantic_set.bench` measures it."""

from __future__ import annotations

from hashlib import blake2b

from tests.cache.semantic_set.negatives import NEGATIVE
from tests.cache.semantic_set.positives import POSITIVE

Pair = tuple[str, str, bool, str]  # cached question, new question, same answer?, kind


def _split(a: str, b: str) -> str:
    return "dev" if blake2b(f"{a}\x00{b}".encode(), digest_size=2).digest()[0] % 3 == 0 else "test"


def pairs(split: str = "test") -> list[Pair]:
    out: list[Pair] = [(a, b, True, "paraphrase") for a, b in POSITIVE]
    out += [(a, b, False, kind) for kind, items in NEGATIVE.items() for a, b in items]
    return [p for p in out if split == "all" or _split(p[0], p[1]) == split]
