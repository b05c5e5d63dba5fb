"""Cheap checks a semantic match must also pass, because sentence embeddings place a question and
its negation (`Is the server running?` / `Is the server not running?`: 0.905 with all-MiniLM-L6-v2)
or the same question about another number closer than many true paraphrases.

Two texts may share an answer only if they agree on: negation (either both negate or neither does),
numbers (the same multiset), polar words (ascending/descending, install/uninstall, love/hate: both
texts use the same ones), and specific names: every capitalized word past a sentence start, path,
identifier with digits or quoted string of one text appears in the other (case-insensitively).
"""

from __future__ import annotations

import re
from functools import lru_cache

_NEG = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "nowhere"})
# Words whose swap for their opposite keeps a sentence's embedding close but flips its meaning.
_POLAR = frozenset("""
ascending descending increase decrease increasing decreasing enable disable enabled disabled add remove
min max minimum maximum before after true false open close start stop encrypt decrypt upload download
import export push pull love hate like dislike buy sell accept reject allow deny include exclude
first last best worst more less higher lower above below inside outside input output left right
success failure positive negative always sometimes all any lock unlock install uninstall
""".split())
_PREFIXES = ("un", "de", "dis", "in", "im", "non")
_WORD = re.compile(r"[A-Za-z][\w'./-]*|\d+(?:[.,]\d+)*")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"\"([^\"]+)\"|`([^`]+)`")


@lru_cache(maxsize=4096)
def _features(text: str) -> tuple[bool, tuple[str, ...], frozenset[str], frozenset[str], frozenset[str]]:
    words = _WORD.findall(text)
    lower = [w.lower().rstrip(".") for w in words]
    negated = any(w in _NEG or w.endswith("n't") for w in lower)
    numbers = tuple(sorted(_NUM.findall(text)))
    specific: set[str] = set()
    sentence_start = True
    for w, lw in zip(words, lower):
        if (w[0].isupper() and not sentence_start and w != "I") or "/" in w or any(ch.isdigit() for ch in w):
            specific.add(lw)
        sentence_start = w.endswith((".", "?", "!", ":"))
    for a, b in _QUOTED.findall(text):
        specific.add((a or b).lower())
    polar = frozenset(w for w in lower if w in _POLAR)
    return negated, numbers, frozenset(specific), frozenset(lower), polar


def compatible(a: str, b: str) -> bool:
    na, numa, spa, wa, pa = _features(a)
    nb, numb, spb, wb, pb = _features(b)
    if na != nb or numa != numb or pa != pb or _prefixed(wa, wb) or _prefixed(wb, wa):
        return False
    text_a, text_b = a.lower(), b.lower()
    return all(s in wb or s in text_b for s in spa) and all(s in wa or s in text_a for s in spb)


def _prefixed(wa: frozenset[str], wb: frozenset[str]) -> bool:
    """A word of one text negated by a prefix in the other (install / uninstall)."""
    return any(p + w in wb for w in wa - wb if len(w) >= 4 for p in _PREFIXES)
