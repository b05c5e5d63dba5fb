"""Token estimation before sending: tiktoken counts of the prompt plus the output allowance. The
estimate must bound what the upstream can bill for the request.

Offline: tiktoken downloads its BPE files on first use, so TIKTOKEN_CACHE_DIR is pointed (unless set)
at the copies litellm bundles: extracted from its wheel into the cache folder by the core install, or
in an installed litellm (litellm_data.py; never imported). Without tiktoken or those files the
estimate falls back to 1 token per 4 UTF-8 bytes.

Chat prompts are counted as OpenAI's cookbook does: 3 tokens per message + its role, content (text
parts; images below) and name (+1), 3 to prime the reply, plus the tools JSON. The encoding follows
the model name: o200k_base for gpt-4o / gpt-4.1 / gpt-5 / o-series, else cl100k_base (an
approximation for other families, which have their own tokenizers).

Images follow OpenAI's tile formula: `detail: low` is 85 tokens; otherwise the image is scaled to fit
2048 x 2048, then its shortest side to 768 (never up), and costs 85 + 170 per 512-pixel tile. The
size is read from the header of a data URL (PNG, GIF, WebP, JPEG); when it cannot be known (a URL)
the estimate is the most any image costs at high detail (8 tiles: 1445). gpt-4o-mini bills images at
its own rates (2833 + 5667 per tile).

Answers: chat `n`; completions one answer per prompt of a list, times `n` (or `best_of`, which
generates that many): the output allowance is the per-answer maximum times the number of answers.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import struct
from collections.abc import Callable
from typing import Any

import orjson

from gateway.limits import litellm_data

PER_MESSAGE = 3
REPLY_PRIMING = 3
IMAGE_BASE, IMAGE_TILE = 85, 170  # gpt-4o's image rates (tokens): low detail / per 512 px tile at high detail
IMAGE_MAX_TILES = 8  # 768 x 2048 after scaling: the most tiles an image can have
IMAGE_MAX_TOKENS = IMAGE_BASE + IMAGE_TILE * IMAGE_MAX_TILES
_IMAGE_RATES = ((re.compile(r"gpt-4o-mini", re.I), 2833, 5667),)  # models with their own image rates
_O200K = re.compile(r"gpt-4o|gpt-4\.1|gpt-5|(^|/)o[1-9]|chatgpt", re.I)
_IMAGE_TYPES = ("image_url", "input_image", "image")
# Parts not counted: empty text, and audio / files (base64 bytes: their JSON says nothing of their
# tokens, and counting it would refuse them as too long for the context window).
_UNCOUNTED = (None, "text", "input_text", "output_text", "input_audio", "audio", "file", "input_file", "document")
_SCAN_BYTES = 96 * 1024  # how far into a JPEG its size is looked for (after EXIF and the like)

# The fields that bound one answer's output tokens, per endpoint (the upstream reads any of them).
OUTPUT_FIELDS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
}

Counter = Callable[[str], int]


def bytes_counter(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


def encoding_for(model: str) -> str:
    return "o200k_base" if _O200K.search(model) else "cl100k_base"


def load_counters(names: set[str]) -> dict[str, Counter]:
    """Encoding name -> counting function (blocking, ~0.2-0.4 s per encoding: call in an executor)."""
    try:
        import tiktoken
    except ImportError:
        return {}
    bundled = litellm_data.tokenizers_dir()
    if bundled and "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    out: dict[str, Counter] = {}
    for name in names:
        try:
            enc = tiktoken.get_encoding(name)
        except Exception:  # files missing offline: keep the byte estimate for this encoding
            continue
        out[name] = _counter(enc)
    return out


def _counter(enc: Any) -> Counter:
    return lambda text: len(enc.encode_ordinary(text))


def prompt_tokens(endpoint: str, payload: dict[str, Any], count: Counter, model: str = "") -> int:
    return prompt_parts(endpoint, payload, count, model)[0]


def prompt_parts(endpoint: str, payload: dict[str, Any], count: Counter, model: str = "") -> tuple[int, int]:
    """(all the prompt tokens the upstream reads, the longest single prompt): a completions list of
    prompts is prefilled prompt by prompt, and each must fit the context window with its answer."""
    if endpoint == "completions":
        sizes = [_text_tokens(p, count, model) for p in _prompts(payload.get("prompt"))]
        return sum(sizes), max(sizes, default=0)
    if endpoint == "embeddings":
        n = _text_tokens(payload.get("input"), count, model)
        return n, n
    total = REPLY_PRIMING
    messages = payload.get("messages")
    if messages is None:
        messages = payload.get("input")  # the Responses API
    if isinstance(messages, str):
        total += PER_MESSAGE + count(messages)
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            total += _text_tokens(m, count, model)
            continue
        if "content" not in m and "role" not in m:  # another kind of item (a tool call, its output): whole
            total += count(orjson.dumps(m).decode())
            continue
        total += PER_MESSAGE + _text_tokens(m.get("content"), count, model) + count(str(m.get("role", "")))
        if m.get("name"):
            total += 1 + count(str(m["name"]))
        if m.get("tool_calls"):
            total += count(orjson.dumps(m["tool_calls"]).decode())
    for extra in ("system", "instructions"):  # Messages / Responses APIs
        if payload.get(extra):
            total += PER_MESSAGE + _text_tokens(payload[extra], count, model)
    for extra in ("tools", "functions", "response_format"):
        if payload.get(extra):
            total += count(orjson.dumps(payload[extra]).decode())
    return total, total


def _prompts(value: Any) -> list[Any]:
    """A completions `prompt`: one string or one list of token ids is one prompt; else a list of them."""
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return value
    return [value]


def _text_tokens(value: Any, count: Counter, model: str = "") -> int:
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
                if part.get("type") in _IMAGE_TYPES:
                    total += image_tokens(part, model)
                elif "text" in part:
                    total += _text_tokens(part.get("text"), count, model)
                elif "content" in part:
                    total += _text_tokens(part.get("content"), count, model)
                elif part.get("type") not in _UNCOUNTED:
                    total += count(orjson.dumps(part).decode())  # another kind of part: counted whole
            else:
                total += _text_tokens(part, count, model)
        return total
    return count(str(value))


def image_tokens(part: dict[str, Any], model: str = "") -> int:
    """One image part (chat `image_url`, Responses `input_image`, Messages `image`)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    detail = (image.get("detail") if isinstance(image, dict) else None) or part.get("detail") or "auto"
    source = part.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":  # the Messages API's inline image
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    base, tile = next(((b, t) for pattern, b, t in _IMAGE_RATES if pattern.search(model)), (IMAGE_BASE, IMAGE_TILE))
    if detail == "low":
        return base
    size = data_url_size(url) if isinstance(url, str) else None
    if size is None:
        return base + tile * IMAGE_MAX_TILES
    return base + tile * tiles(*size)


def tiles(width: int, height: int) -> int:
    """512-pixel tiles of an image at high detail: fit in 2048 x 2048, then shortest side 768."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return max(1, math.ceil(w / 512)) * max(1, math.ceil(h / 512))


def data_url_size(url: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 data URL's image, or None."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",")
    if comma < 0 or ";base64" not in url[:comma]:
        return None
    b64 = url[comma + 1 : comma + 1 + _SCAN_BYTES * 4 // 3]
    b64 = b64[: len(b64) // 4 * 4]
    try:
        data = base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return None
    try:
        return _image_size(data)
    except (struct.error, IndexError):
        return None


def _image_size(d: bytes) -> tuple[int, int] | None:
    if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        kind = d[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(d[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", d[26:30])
            return w & 0x3FFF, h & 0x3FFF
        return None
    if d[:2] == b"\xff\xd8":  # JPEG: walk the segments to the frame header (SOFn)
        i = 2
        while i + 9 < len(d):
            if d[i] != 0xFF:
                return None
            marker = d[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", d[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", d[i + 5 : i + 9])
                return w, h
            i += 2 + length
    return None


def _number(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        return None
    return int(min(v, 2**62))


def requested_output(endpoint: str, payload: dict[str, Any]) -> int | None:
    """The client's own bound on one answer's output tokens (the largest of the fields the upstream
    may read), or None."""
    values = [_number(payload.get(f)) for f in OUTPUT_FIELDS.get(endpoint, ("max_tokens",))]
    return max((v for v in values if v is not None), default=None)


def answers(endpoint: str, payload: dict[str, Any]) -> int:
    """How many answers the upstream generates (and bills) for this request."""
    if endpoint == "embeddings":
        return 0
    n = _number(payload.get("n")) or 1
    if endpoint == "completions":
        return len(_prompts(payload.get("prompt"))) * max(n, _number(payload.get("best_of")) or 1)
    return n if endpoint == "chat" else 1


def output_allowance(endpoint: str, payload: dict[str, Any], default: int) -> int:
    """Output tokens to reserve: per answer max_completion_tokens / max_tokens (else the configured
    default), times the number of answers."""
    per_answer = requested_output(endpoint, payload)
    return (default if per_answer is None else per_answer) * answers(endpoint, payload)


def apply_output_cap(payload: dict[str, Any], endpoint: str, kind: str, cap: int) -> None:
    """Bound each answer to `cap` output tokens in an upstream body: every output-limit field the
    client set is lowered to it; when it set none, the one the engine reads is added (chat:
    `max_completion_tokens` for OpenAI's API, which refuses `max_tokens` for reasoning models,
    `max_tokens` for the engines)."""
    fields = OUTPUT_FIELDS.get(endpoint, ("max_tokens",))
    present = [f for f in fields if f in payload]
    for f in present:
        v = _number(payload[f])
        if v is None or v > cap:
            payload[f] = cap
    if not present:
        payload[fields[0] if endpoint != "chat" or kind == "openai" else "max_tokens"] = cap


def capped_body(body: bytes, endpoint: str, kind: str, cap: int) -> bytes:
    """`body` with each answer bounded to `cap` output tokens (apply_output_cap), re-serialized only
    when that changes it (a request of another API: its own body, or its translated chat body)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(payload, dict):
        return body
    before = dict(payload)
    apply_output_cap(payload, endpoint, kind, cap)
    return body if payload == before else orjson.dumps(payload)
