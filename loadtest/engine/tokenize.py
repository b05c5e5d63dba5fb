"""Pseudo-tokenizer and prompt rendering.

One token = 4 bytes of the UTF-8 rendered prompt (rounded up); a token-id prompt
(/v1/completions with a list of ints) is packed as 4 bytes per id, so it counts exactly
len(ids) tokens. Chat prompts are rendered by a fixed template, tools JSON first, then
every turn in order, then the generation prompt:

    <|tools|>\n[...tools JSON...]<|end|>\n
    <|system|>\n...<|end|>\n
    <|user|>\n...<|end|>\n
    <|assistant|>\n...<|end|>\n
    <|assistant|>\n                      <- generation prompt

so sessions sharing a system prompt and tool list share a byte (hence token and block)
prefix, and a follow-up turn starts with the previous prompt + answer + "<|end|>\n".
Prefix-cache block hashes are chained: hash(previous block hash, block bytes).
"""

from __future__ import annotations

from array import array
from typing import Any

import orjson

TOKEN_BYTES = 4
END = "<|end|>\n"
GENERATION_PROMPT = b"<|assistant|>\n"
END_BYTES = END.encode()


def count_tokens(data: bytes) -> int:
    return (len(data) + TOKEN_BYTES - 1) // TOKEN_BYTES


def token_ids_bytes(ids: list[int]) -> bytes:
    return array("I", [int(i) & 0xFFFFFFFF for i in ids]).tobytes()


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif "image_url" in part:
                    url = part["image_url"]
                    url = url.get("url", "") if isinstance(url, dict) else url
                    parts.append(f"<image:{url}>")
                else:
                    parts.append(orjson.dumps(part).decode())
            else:
                parts.append(str(part))
        return "".join(parts)
    return orjson.dumps(content).decode()


def render_chat(messages: list[Any], tools: list[Any] | None = None) -> bytes:
    """The rendered chat prompt (bytes), ending with the assistant generation prompt."""
    parts: list[str] = []
    if tools:
        parts.append("<|tools|>\n" + orjson.dumps(tools).decode() + END)
    for msg in messages:
        if not isinstance(msg, dict):
            raise ValueError("each message must be an object")
        role = msg.get("role")
        if not isinstance(role, str):
            raise ValueError("each message needs a string 'role'")
        text = _content_text(msg.get("content"))
        if msg.get("tool_calls"):
            text += orjson.dumps(msg["tool_calls"]).decode()
        parts.append(f"<|{role}|>\n{text}{END}")
    return "".join(parts).encode() + GENERATION_PROMPT


def block_hashes(data: bytes, block_size: int, parent: int = 0, start_block: int = 0) -> list[int]:
    """Chained hashes of the full token blocks of `data` from block `start_block` on."""
    step = block_size * TOKEN_BYTES
    out: list[int] = []
    h = parent
    for i in range(start_block, len(data) // step):
        h = hash((h, data[i * step : (i + 1) * step]))
        out.append(h)
    return out
