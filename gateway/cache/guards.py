"""Cheap checks a semantic match must also pass, because sentence embeddings place a question and
its opposite closer than many true paraphrases: `Is the server running?` / `Is the server not
running?` 0.905, `convert pounds to kilograms` / `convert kilograms to pounds` 0.998, `zoom in` /
`zoom out` 0.959 with all-MiniLM-L6-v2.

Two texts may share an answer only if they agree on:
- negation: both negate or neither does (`not`, `never`, `without`, `n't` ...), and no word of one
  is a prefixed negation of a word of the other (install / uninstall, able / unable);
- numbers: the same ones in the same order;
- opposite words, compared after stripping inflections (`enabling` = `enable`, `writes` =
  `write`): the same STRICT words (enable/disable, min/max, before/after, install/remove,
  start/stop, ...: one text cannot say `enable` where the other says `disable` or nothing), and
  for the GROUPS of opposites too common as plain wording to require in both (read/write,
  show/hide, on/off, up/down, in/out, first/last, ...) the same words whenever both texts use
  the group (`turn on` / `turn off`, `read a file` / `write a file`);
- direction: words on either side of a direction word (`to`, `into`, `from`, `than`, `with`,
  `as`, `by`, `over`, `->`) may not swap sides: `Fahrenheit to Celsius` / `Celsius to Fahrenheit`,
  `string to int` / `int to string`, `X faster than Y` / `Y faster than X`;
- specific names: every capitalized word past a sentence start, camelCase identifier, path,
  identifier with digits or quoted string of one text appears in the other (case-insensitively).

Precision first: each rule refuses some true paraphrases (a miss costs one upstream call, a wrong
answer costs the agent's work). Measured in BENCHMARKS.md ("Semantic cache: precision").
"""

from __future__ import annotations

import re
from functools import lru_cache

_NEG = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "nowhere"})
# Words that mark what a request is for and whose swap for their opposite keeps a sentence's
# embedding close but flips its meaning: both texts must use the same ones (after stripping
# inflections), one that says `enable` where the other says nothing is refused too.
STRICT = frozenset(
    """
ascending descending increase decrease increment decrement enable disable activate deactivate encrypt decrypt
encode decode compress decompress zip unzip serialize deserialize upload download import export push pull
install uninstall mount unmount connect disconnect subscribe unsubscribe expand collapse maximize minimize
uppercase lowercase sync async synchronous asynchronous min max minimum maximum before after earliest latest
oldest newest largest smallest biggest longest shortest highest lowest lock unlock grant revoke allow deny block
accept reject approve include exclude mute unmute pause resume unpause freeze unfreeze login logout online
offline buy sell love hate dislike true false success failure succeed positive negative even odd inside outside
above below input output public private prepend append insert delete create destroy drop remove add start stop
finish allowlist denylist whitelist blacklist
""".split()
)
# Opposites too common as plain wording (`show me`, `read a file` = `load a file`, `in Python`) to
# require in both texts: refused only when both texts use words of the group and not the same ones.
GROUPS: tuple[frozenset[str], ...] = tuple(
    frozenset(g.split())
    for g in """
    show hide visible hidden invisible | read write readable writable | open close | new old | first last |
    top bottom | head tail | front back | left right | more less most least fewer |
    higher lower larger smaller bigger faster slower longer shorter | best worst | hot cold warm cool |
    light dark | black white | fast slow | like dislike | all any | always sometimes | upper lower |
    inner outer | internal external | north south east west | plus minus | rise fall | win lose |
    gain loss profit | pass fail | valid invalid | legal illegal | send receive |
    forward backward forwards backwards | previous next | earlier later | beginning start end |
    on off | up down | in out
    """.split("|")
)
OPPOSITES = STRICT | frozenset().union(*GROUPS)
_DIRECTION = frozenset({"to", "into", "from", "than", "onto", "toward", "towards", "with", "as", "by", "over", "->"})
_STOP = frozenset(
    """
a an the this that these those my your our their its his her i you we they he she it me us them what which who
whom whose how why when where is are was were be been being do does did done can could should would will shall
may might must have has had having of in on at for about and or but if then so some any each every via using use
please way there here just also into onto up down off out
""".split()
)
_PREFIXES = ("un", "de", "dis", "in", "im", "il", "ir", "non")
_WORD = re.compile(r"->|→|=>|[A-Za-z][\w'./-]*|\d+(?:[.,]\d+)*")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"\"([^\"]+)\"|`([^`]+)`")
_CAMEL = re.compile(r"[a-z][A-Z]")


def lemma(word: str) -> str:
    """`word` as its OPPOSITES entry when an inflection of one (writes, enabled, stopping,
    biggest ...), else itself."""
    if word in OPPOSITES:
        return word
    stems = []
    if word.endswith("ies"):
        stems.append(word[:-3] + "y")
    if word.endswith("es"):
        stems.append(word[:-2])
    if word.endswith("s"):
        stems.append(word[:-1])
    for suffix in ("ing", "ed", "er"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            base = word[: -len(suffix)]
            stems += [base, base + "e"]
            if len(base) > 2 and base[-1] == base[-2]:
                stems.append(base[:-1])  # stopped -> stop, running -> run
    return next((s for s in stems if s in OPPOSITES), word)


def _content(word: str) -> str:
    """A content word for the direction rule: lower case, a plural `s` dropped."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@lru_cache(maxsize=4096)
def _features(text: str) -> tuple[bool, tuple[str, ...], frozenset[str], frozenset[str], frozenset[str], frozenset]:
    words = _WORD.findall(text)
    lower = [w.lower().rstrip(".") for w in words]
    negated = any(w in _NEG or w.endswith("n't") for w in lower)
    numbers = tuple(_NUM.findall(text))  # in order: `Python 2 code on Python 3` is not the reverse
    specific: set[str] = set()
    sentence_start = True
    for w, lw in zip(words, lower):
        if (
            (w[0].isupper() and not sentence_start and w != "I")
            or "/" in w
            or any(ch.isdigit() for ch in w)
            or _CAMEL.search(w)
        ):
            specific.add(lw)
        sentence_start = w.endswith((".", "?", "!", ":"))
    for a, b in _QUOTED.findall(text):
        specific.add((a or b).lower())
    parts = [p for w in lower for p in (w.split("-") if "-" in w and w != "->" else (w,)) if p]
    polar = {lemma(p) for p in parts if lemma(p) in OPPOSITES}
    for w, nxt in zip(parts, parts[1:]):  # `turn on` / `switch off` say enable / disable
        if w.startswith(("turn", "switch")) and nxt in ("on", "off"):
            polar.add("enable" if nxt == "on" else "disable")
    return negated, numbers, frozenset(specific), frozenset(parts), frozenset(polar), _directed(lower)


def _directed(lower: list[str]) -> frozenset[tuple[str, str]]:
    """(x, y) for content words x before and y after a direction word, the two nearest on each
    side (`convert a string to an int` -> (string, int), (convert, int))."""
    tokens = ["->" if w in ("→", "=>") else w for w in lower]
    content = [(i, w) for i, w in enumerate(tokens) if w not in _STOP and w not in _DIRECTION]
    out: set[tuple[str, str]] = set()
    for m, w in enumerate(tokens):
        if w not in _DIRECTION:
            continue
        left = [c for i, c in content if i < m][-2:]
        right = [c for i, c in content if i > m][:2]
        for x in left:
            for y in right:
                if x != y:  # as written (HTTP / HTTPS), and without a plural s (string / ints)
                    out.add((x, y))
                    if _content(x) != _content(y):
                        out.add((_content(x), _content(y)))
    return frozenset(out)


def compatible(a: str, b: str) -> bool:
    na, numa, spa, wa, pa, da = _features(a)
    nb, numb, spb, wb, pb, db = _features(b)
    if na != nb or numa != numb or pa & STRICT != pb & STRICT or _prefixed(wa, wb) or _prefixed(wb, wa):
        return False
    for group in GROUPS:
        ua, ub = group & pa, group & pb
        if ua and ub and ua != ub:
            return False
    if any((y, x) in db for x, y in da):
        return False
    text_a, text_b = a.lower(), b.lower()
    return all(s in wb or s in text_b for s in spa) and all(s in wa or s in text_a for s in spb)


def _prefixed(wa: frozenset[str], wb: frozenset[str]) -> bool:
    """A word of one text negated by a prefix in the other (install / uninstall)."""
    return any(p + w in wb for w in wa - wb if len(w) >= 4 for p in _PREFIXES)
