"""Deterministic output: answer text, tool-call arguments, JSON answers, embedding vectors.

Everything is a pure function of the engine seed and the request (its rendered prompt
bytes), so the same seed + same request gives the same text and token counts.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import zlib
from array import array
from math import sqrt
from typing import Any

from .schema_fill import fill

_WORDS = (
    "the of and to in is it that for on with as was at by be this have from or one had not"
    " but what all were when we there can an your which their said if do will each about how"
    " up out them then she many some so these would other into has more her two like him see"
    " time could no make than first been its who now people my made over did down only way"
    " find use may water long little very after words called just where most know get through"
    " back much before go good new write our used me man too any day same right look think"
    " also around another came come work three word must because does part even place well"
    " such here take why things help put years different away again off went old number great"
    " tell men say small every found still between name should home big give air line set own"
    " under read last never us left end along while might next sound below saw something"
    " thought both few those always looked show large often together asked house world going"
    " want school important until form food keep children feet land side without boy once"
    " animals life enough took"
).split()
VOCAB_SIZE = 211  # prime, so any stride walks the whole vocabulary
CHARS_PER_PIECE = 4  # JSON / tool-argument text is streamed in pieces of this many chars
ARG_PIECE_CHARS = 8


def pieces(text: str, size: int = CHARS_PER_PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class TextGen:
    def __init__(self, seed: int, output_tokens: int, output_tokens_max: int = 0) -> None:
        self.seed = seed & 0xFFFFFFFF
        self._seed_bytes = seed.to_bytes(16, "little", signed=True)
        words = (_WORDS * (VOCAB_SIZE // len(_WORDS) + 1))[:VOCAB_SIZE]
        random.Random(seed).shuffle(words)
        self._first = [w.capitalize() for w in words]
        self._rest = [" " + w for w in words]
        self.output_tokens = output_tokens
        self._span = max(0, output_tokens_max - output_tokens) + 1

    @property
    def vocabulary(self) -> list[str]:
        """Token texts (after the first token of an answer)."""
        return self._rest

    def key(self, prompt: bytes) -> int:
        """Request key: everything deterministic about an answer derives from it."""
        return zlib.crc32(prompt, self.seed)

    def natural_length(self, key: int) -> int:
        return self.output_tokens + (key % self._span if self._span > 1 else 0)

    def tokens(self, key: int, choice: int, count: int) -> list[str]:
        """`count` token texts; their concatenation is the answer text."""
        if count <= 0:
            return []
        start = (key * 31 + choice * 7919) % VOCAB_SIZE
        stride = 1 + (key >> 7) % (VOCAB_SIZE - 1)
        rest = self._rest
        out = [self._first[start]]
        idx = start
        for _ in range(count - 1):
            idx = (idx + stride) % VOCAB_SIZE
            out.append(rest[idx])
        return out

    def json_answer(self, key: int, choice: int, schema: Any | None, natural: int) -> str:
        if schema is not None:
            return json.dumps(fill(schema))
        words = "".join(self.tokens(key, choice, max(1, natural // 3)))
        return json.dumps({"answer": words})

    def embedding(self, data: bytes, dim: int) -> array:
        """Unit float32 vector from a hash of the text (identical text, identical vector)."""
        raw = hashlib.shake_256(self._seed_bytes + data).digest(dim * 2)
        ints = array("h", raw)
        norm = sqrt(sum(x * x for x in ints)) or 1.0
        return array("f", [x / norm for x in ints])


def tool_arguments(tool: dict[str, Any]) -> str:
    fn = tool.get("function") if isinstance(tool, dict) else None
    params = fn.get("parameters") if isinstance(fn, dict) else None
    value = fill(params) if isinstance(params, dict) else {}
    if not isinstance(value, dict):
        value = {}
    return json.dumps(value)


def float32_le_bytes(vec: array) -> bytes:
    if sys.byteorder == "little":
        return vec.tobytes()
    swapped = array("f", vec)
    swapped.byteswap()
    return swapped.tobytes()
