"""Log probabilities when a request asks for them, in vLLM's shapes (checked against vLLM 0.32):

chat (`logprobs: true`, `top_logprobs: k` in 0..20):
    "logprobs": {"content": [{"token": " the", "logprob": -0.41, "bytes": [32, 116, 104, 101],
                              "top_logprobs": [<k entries {"token", "logprob", "bytes"}, the chosen first>]}]}
completions (`logprobs: k` in 0..20, `true` = 1):
    "logprobs": {"text_offset": [0, 4], "token_logprobs": [-0.41, -1.2], "tokens": [" the", " of"],
                 "top_logprobs": [{" the": -0.41, ...max(k, 1) entries}, ...]}
Streams carry the entries of each chunk's tokens. Values are made up but deterministic (seed,
prompt, position), negative, the chosen token the most likely; alternatives come from the
simulator's vocabulary. Errors as vLLM words them.
"""

from __future__ import annotations

import zlib
from typing import Any

from .errors import RequestError

MAX_LOGPROBS = 20  # vLLM's default max_logprobs
VOCAB = 211  # textgen's vocabulary (what "-1 = the whole vocabulary" asks for)


def requested(body: dict[str, Any], chat: bool) -> int | None:
    """Top-k asked for (0 = only the chosen token), or None when logprobs are not asked for."""
    if chat:
        top = body.get("top_logprobs")
        if not body.get("logprobs"):
            if top is not None:
                raise RequestError(
                    400,
                    "when using `top_logprobs`, `logprobs` must be set to true. (parameter=top_logprobs)",
                    param="top_logprobs",
                )
            return None
        k = 0 if top is None else top
    else:
        k = body.get("logprobs")
        if k is None or k is False:
            return None
        k = 1 if k is True else k
    if isinstance(k, bool) or not isinstance(k, int) or k < -1:
        raise RequestError(400, "logprobs must be a non-negative integer or -1", param="logprobs")
    k = VOCAB if k == -1 else k
    if k > MAX_LOGPROBS:
        raise RequestError(
            400,
            f"Requested sample logprobs of {k}, which is greater than max allowed: {MAX_LOGPROBS} "
            f"(parameter=logprobs, value={k})",
            param="logprobs",
        )
    return k


def _value(seed: int, choice: int, pos: int, rank: int) -> float:
    """A log probability: the chosen token (rank 0) in (-2, 0], each lower rank below the one before."""
    h = zlib.crc32(b"%d:%d:%d" % (choice, pos, rank), seed & 0xFFFFFFFF)
    base = -2.0 * (h % 10_000) / 10_000
    return base - 1.5 * rank if rank else base


def _alternatives(token: str, words: list[str], seed: int, pos: int, k: int) -> list[str]:
    out: list[str] = []
    i = (seed + pos * 7) % len(words)
    while len(out) < k - 1 and len(out) < len(words) - 1:
        w = words[i]
        if w != token and w not in out:
            out.append(w)
        i = (i + 13) % len(words)
    return out


class Logprobs:
    """The logprobs of one choice's tokens (`pieces` = token texts), for bodies and stream chunks."""

    __slots__ = ("pieces", "k", "seed", "choice", "words")

    def __init__(self, pieces: list[str], k: int, seed: int, choice: int, words: list[str]) -> None:
        self.pieces, self.k, self.seed, self.choice, self.words = pieces, k, seed, choice, words

    def _ranked(self, pos: int) -> list[tuple[str, float]]:
        token = self.pieces[pos]
        alts = _alternatives(token, self.words, self.seed, pos, self.k)
        return [(t, _value(self.seed, self.choice, pos, r)) for r, t in enumerate([token, *alts])]

    def chat_entry(self, pos: int) -> dict[str, Any]:
        ranked = self._ranked(pos)
        token, lp = ranked[0]
        top = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in ranked[: self.k]]
        return {"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": top}

    def chat(self, start: int, end: int) -> dict[str, Any]:
        return {"content": [self.chat_entry(p) for p in range(start, end)]}

    def completion(self, start: int, end: int) -> dict[str, Any]:
        offset = sum(len(p) for p in self.pieces[:start])
        offsets, values, tokens, tops = [], [], [], []
        for pos in range(start, end):
            ranked = self._ranked(pos)
            offsets.append(offset)
            offset += len(self.pieces[pos])
            values.append(ranked[0][1])
            tokens.append(ranked[0][0])
            tops.append(dict(ranked[: max(1, self.k)]))
        return {"text_offset": offsets, "token_logprobs": values, "tokens": tokens, "top_logprobs": tops}
