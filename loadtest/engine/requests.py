"""Request validation and planning: a JSON body becomes a Job (prompt, answer tokens).

Validation messages follow vLLM's where it has one (missing fields, context length,
max_tokens, stream_options without stream, unknown named tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RequestError
from .logprobs import Logprobs, requested
from .textgen import ARG_PIECE_CHARS, TextGen, pieces, tool_arguments
from .tokenize import (
    END_BYTES,
    block_hashes,
    count_tokens,
    render_chat,
    token_ids_bytes,
)


@dataclass(slots=True)
class Job:
    chat: bool
    model: str
    stream: bool
    include_usage: bool
    continuous_usage: bool
    prompt_lens: list[int]
    hashes: list[list[int]]
    finish_hashes: list[int] | None
    target: int  # tokens generated per choice
    finish_reason: str
    pieces: list[list[str]]  # per choice: text of each token (tool call: argument fragments)
    tool: list[tuple[str, str] | None]  # per choice: (call id, function name) for a tool call
    max_tokens: int | None = None  # the request's limit (rate limits count it, like OpenAI)
    logprobs: list[Logprobs | None] | None = None  # per choice, when the request asked for logprobs

    @property
    def prompt_tokens(self) -> int:
        return sum(self.prompt_lens)

    @property
    def n_choices(self) -> int:
        return len(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return self.target * len(self.pieces)

    @property
    def rate_limit_tokens(self) -> int:
        """Tokens a per-minute token limit charges: prompt + max_tokens (or the answer) per choice."""
        return self.prompt_tokens + (self.max_tokens or self.target) * len(self.pieces)


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{name}' must be an integer", param=name)
    return value


def require_model(body: Any) -> str:
    if not isinstance(body, dict):
        raise RequestError(400, "Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "Field required: 'model'", param="model")
    return model


def _stream_flags(body: dict[str, Any], remote: bool) -> tuple[bool, bool, bool]:
    stream = bool(body.get("stream"))
    opts = body.get("stream_options")
    if opts is not None and not stream:
        raise RequestError(400, "Stream options can only be defined when `stream=True`.", param="stream_options")
    if not isinstance(opts, dict):
        return stream, False, False
    include = bool(opts.get("include_usage", not remote))
    return stream, include, include and bool(opts.get("continuous_usage_stats"))


def _limits(body: dict[str, Any], chat: bool) -> tuple[int | None, int]:
    max_tokens = _int_field(body, "max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(400, f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
    n = _int_field(body, "n") or 1
    if n < 1 or n > 128:
        raise RequestError(400, f"n must be between 1 and 128, got {n}.", param="n")
    return max_tokens, n


def _check_context(prompt_tokens: int, max_tokens: int | None, max_len: int) -> None:
    if prompt_tokens >= max_len:
        raise RequestError(
            400,
            f"This model's maximum context length is {max_len} tokens. However, your request "
            f"has {prompt_tokens} input tokens. Please reduce the length of the input messages.",
            param="input_tokens",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_len:
        raise RequestError(
            400,
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {max_len} tokens and your request has {prompt_tokens} "
            f"input tokens ({max_tokens} > {max_len} - {prompt_tokens}).",
            param="max_tokens",
        )


def _cut(natural: int, max_tokens: int | None, natural_reason: str, ignore_eos: bool = False) -> tuple[int, str]:
    """Answer length and finish_reason from the natural length and the request's limit."""
    if max_tokens is None:
        return natural, natural_reason
    if ignore_eos or max_tokens <= natural:
        return max_tokens, "length"
    return natural, natural_reason


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool this answer calls, or None for a text answer. Like vLLM: a named tool_choice or
    "required" is always answered with a tool call (guided decoding forces it, even right after a
    tool result); "auto" calls the first tool unless the last message is a tool result."""
    tools = body.get("tools")
    if not tools or not isinstance(tools, list):
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if isinstance(tool, dict) and (tool.get("function") or {}).get("name") == name:
                return tool
        raise RequestError(400, f"Tool '{name}' has not been passed in `tools`.", param="tool_choice")
    messages = body.get("messages") or []
    if choice != "required" and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    return tools[0] if isinstance(tools[0], dict) else None


def plan_chat(body: dict[str, Any], gen: TextGen, cfg: Any, new_id: Any) -> Job:
    model = body["model"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "Field required: 'messages'", param="messages")
    stream, include_usage, continuous = _stream_flags(body, cfg.is_remote)
    max_tokens, n = _limits(body, chat=True)
    tools = body.get("tools") or None
    try:
        prompt = render_chat(messages, tools)
    except ValueError as exc:
        raise RequestError(400, str(exc), param="messages") from None
    p_tokens = count_tokens(prompt)
    _check_context(p_tokens, max_tokens, cfg.max_model_len)
    top_k = requested(body, chat=True)
    key = gen.key(prompt)
    natural = max(1, gen.natural_length(key))
    tool = _pick_tool(body)
    fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else None
    fmt_type = fmt.get("type") if fmt else None
    all_pieces: list[list[str]] = []
    tool_info: list[tuple[str, str] | None] = []
    finish_hashes = None
    if tool is not None:
        name = str((tool.get("function") or {}).get("name", "tool"))
        frags = pieces(tool_arguments(tool), ARG_PIECE_CHARS)
        # vLLM: "tool_calls" when its parser found the call (auto, required); a named tool_choice is
        # decoded straight into the call and ends as the text would ("stop")
        named = isinstance(body.get("tool_choice"), dict)
        target, reason = _cut(1 + len(frags), max_tokens, "stop" if named else "tool_calls")
        for _ in range(n):
            all_pieces.append(frags)
            tool_info.append((new_id("tool"), name))
    elif fmt_type in ("json_object", "json_schema"):
        schema = None
        if fmt is not None and fmt_type == "json_schema":
            js = fmt.get("json_schema") or {}
            schema = js.get("schema") if isinstance(js, dict) else None
        texts = [pieces(gen.json_answer(key, i, schema, natural)) for i in range(n)]
        target, reason = _cut(len(texts[0]), max_tokens, "stop")
        all_pieces, tool_info = texts, [None] * n
    else:
        target, reason = _cut(natural, max_tokens, "stop", bool(body.get("ignore_eos")))
        all_pieces = [gen.tokens(key, i, target) for i in range(n)]
        tool_info = [None] * n
        if n == 1 and reason == "stop":
            # Blocks of prompt + answer, so the next turn of this conversation hits the cache.
            answer = prompt + "".join(all_pieces[0]).encode() + END_BYTES
            finish_hashes = block_hashes(answer, cfg.block_size)
    return Job(
        chat=True,
        model=model,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        prompt_lens=[p_tokens],
        hashes=[block_hashes(prompt, cfg.block_size)],
        finish_hashes=finish_hashes,
        target=target,
        finish_reason=reason,
        pieces=all_pieces,
        tool=tool_info,
        max_tokens=max_tokens,
        logprobs=_logprobs(top_k, all_pieces, tool_info, key, gen),
    )


def _logprobs(
    k: int | None, all_pieces: list[list[str]], tools: list[Any], key: int, gen: TextGen
) -> list[Logprobs | None] | None:
    if k is None:
        return None
    words = gen.vocabulary
    return [
        None if t else Logprobs(p, k, key, i, words) for i, (p, t) in enumerate(zip(all_pieces, tools, strict=True))
    ]


def prompt_list(value: Any, field: str) -> list[bytes]:
    """Normalise a prompt / input field: str, [str], [int], [[int]] -> list of byte strings."""
    if isinstance(value, str):
        return [value.encode()]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [token_ids_bytes(value)]
        out = []
        for v in value:
            if isinstance(v, str):
                out.append(v.encode())
            elif isinstance(v, list) and all(isinstance(i, int) for i in v):
                out.append(token_ids_bytes(v))
            else:
                raise RequestError(
                    400, f"Invalid '{field}': expected a string, a list of strings or a list of token ids", param=field
                )
        return out
    raise RequestError(400, f"Field required: '{field}'", param=field)


def plan_completion(body: dict[str, Any], gen: TextGen, cfg: Any) -> Job:
    prompts = prompt_list(body.get("prompt"), "prompt")
    stream, include_usage, continuous = _stream_flags(body, cfg.is_remote)
    max_tokens, n = _limits(body, chat=False)
    top_k = requested(body, chat=False)
    lens = [count_tokens(p) for p in prompts]
    for plen in lens:
        _check_context(plen, max_tokens, cfg.max_model_len)
    keys = [gen.key(p) for p in prompts]
    natural = max(1, gen.natural_length(keys[0]))
    target, reason = _cut(natural, max_tokens, "stop", bool(body.get("ignore_eos")))
    all_pieces = [gen.tokens(k, i, target) for k in keys for i in range(n)]
    return Job(
        chat=False,
        model=body["model"],
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        prompt_lens=lens,
        hashes=[block_hashes(p, cfg.block_size) for p in prompts],
        finish_hashes=None,
        target=target,
        finish_reason=reason,
        pieces=all_pieces,
        tool=[None] * len(all_pieces),
        max_tokens=max_tokens,
        logprobs=_logprobs(top_k, all_pieces, [None] * len(all_pieces), keys[0], gen),
    )
