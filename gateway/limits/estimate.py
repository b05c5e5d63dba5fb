"""Token estimation before sending: tiktoken counts of the prompt plus the output allowance.

Offline: tiktoken downloads its BPE files on first use, so TIKTOKEN_CACHE_DIR is pointed (unless set)
at the copies litellm bundles (`litellm/litellm_core_utils/tokenizers/`, found without importing
litellm). Without tiktoken or those files the estimate falls back to 1 token per 4 UTF-8 bytes.

Chat prompts are counted as OpenAI's cookbook does: 3 tokens per message + its role, content (text
parts; 85 per image part) and name (+1), 3 to prime the reply, plus the tools JSON. The encoding
follows the model name: o200k_base for gpt-4o / gpt-4.1 / gpt-5 / o-series, else cl100k_base (an
approximation for other families, which have their own tokenizers).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Callable

import orjson

PER_MESSAGE = 3
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
_O200K = re.compile(r"gpt-4o|gpt-4\.1|gpt-5|(^|/)o[1-9]|chatgpt", re.I)

Counter = Callable[[str], int]


def bytes_counter(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


def encoding_for(model: str) -> str:
    return "o200k_base" if _O200K.search(model) else "cl100k_base"


def _bundled_tokenizers() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
    return str(path) if path.is_dir() else None


def load_counters(names: set[str]) -> dict[str, Counter]:
    """Encoding name -> counting function (blocking, ~0.2-0.4 s per encoding: call in an executor)."""
    try:
        import tiktoken
    except ImportError:
        return {}
    bundled = _bundled_tokenizers()
    if bundled and "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = bundled
    out: dict[str, Counter] = {}
    for name in names:
        try:
            enc = tiktoken.get_encoding(name)
        except Exception:  # files missing offline: keep the byte estimate for this encoding
            continue
        out[name] = lambda text, _enc=enc: len(_enc.encode_ordinary(text))
    return out


def prompt_tokens(endpoint: str, payload: dict[str, Any], count: Counter) -> int:
    if endpoint == "chat":
        total = REPLY_PRIMING
        for m in payload.get("messages") or ():
            if not isinstance(m, dict):
                continue
            total += PER_MESSAGE + _text_tokens(m.get("content"), count) + count(str(m.get("role", "")))
            if m.get("name"):
                total += 1 + count(str(m["name"]))
            if m.get("tool_calls"):
                total += count(orjson.dumps(m["tool_calls"]).decode())
        for extra in ("tools", "functions", "response_format"):
            if payload.get(extra):
                total += count(orjson.dumps(payload[extra]).decode())
        return total
    field = "prompt" if endpoint == "completions" else "input"
    return _text_tokens(payload.get(field), count)


def _text_tokens(value: Any, count: Counter) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return count(value)
    if isinstance(value, int):  # a token id
        return 1
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, dict):
                if part.get("type") in ("image_url", "input_image", "image"):
                    total += IMAGE_TOKENS
                else:
                    total += _text_tokens(part.get("text"), count)
            else:
                total += _text_tokens(part, count)
        return total
    return count(str(value))


def output_allowance(endpoint: str, payload: dict[str, Any], default: int) -> int:
    """Output tokens to reserve: max_completion_tokens / max_tokens, else the configured default."""
    if endpoint == "embeddings":
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        v = payload.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            n = payload.get("n")
            return v * (n if isinstance(n, int) and n > 1 else 1)
    return default
