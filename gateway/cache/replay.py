"""Between the two forms of an answer: a complete JSON response (what the cache stores) and an SSE
stream (what a streaming client expects).

- `to_sse`: a cached answer replayed to a streaming request, with the engine's chunk shape (a
  role chunk, the content, a chunk carrying finish_reason), the usage chunk (`"choices": []`) only
  when the client asked for it, then `data: [DONE]`.
- `from_sse`: a streamed answer, as the client received it, folded back into the response it
  stands for (content and tool-call fragments joined), once the stream completed.
- `storable`: the checks an answer must pass to be stored (no error, every choice finished for a
  reason that is not a cut).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.sse import _event_json, _split_events


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def to_sse(body: dict[str, Any], endpoint: str, include_usage: bool) -> bytes:
    head = {"id": body.get("id", ""), "created": body.get("created", 0), "model": body.get("model", "")}
    out: list[bytes] = []
    chat = endpoint == "chat"
    obj_name = "chat.completion.chunk" if chat else "text_completion"
    for choice in body.get("choices") or []:
        i = choice.get("index", 0)
        if chat:
            msg = choice.get("message") or {}
            out.append(
                _event(
                    {
                        **head,
                        "object": obj_name,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"role": msg.get("role", "assistant"), "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
            delta: dict[str, Any] = {}
            if msg.get("content"):
                delta["content"] = msg["content"]
            if msg.get("reasoning_content"):
                delta["reasoning_content"] = msg["reasoning_content"]
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{"index": n, **tc} for n, tc in enumerate(msg["tool_calls"])]
            if delta:
                out.append(
                    _event(
                        {
                            **head,
                            "object": obj_name,
                            "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                        }
                    )
                )
            out.append(
                _event(
                    {
                        **head,
                        "object": obj_name,
                        "choices": [
                            {"index": i, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}
                        ],
                    }
                )
            )
        else:
            out.append(
                _event(
                    {
                        **head,
                        "object": obj_name,
                        "choices": [
                            {
                                "index": i,
                                "text": choice.get("text", ""),
                                "logprobs": None,
                                "finish_reason": choice.get("finish_reason"),
                            }
                        ],
                    }
                )
            )
    if include_usage and body.get("usage"):
        out.append(_event({**head, "object": obj_name, "choices": [], "usage": body["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def from_sse(stream: bytes, endpoint: str, usage: dict[str, int] | None) -> dict[str, Any] | None:
    """The complete response a finished stream stands for; None when it cannot be rebuilt (an
    error event, nothing but [DONE], unparseable data)."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for event in _split_events(stream):
        if b"[DONE]" in event and event.strip().endswith(b"[DONE]"):
            continue
        obj = _event_json(event)
        if not isinstance(obj, dict) or "error" in obj:
            return None
        if not head:
            head = {"id": obj.get("id", ""), "created": obj.get("created", 0), "model": obj.get("model", "")}
        if isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
        for c in obj.get("choices") or []:
            _fold(choices.setdefault(int(c.get("index", 0)), {"index": int(c.get("index", 0))}), c, endpoint)
    if not choices:
        return None
    chat = endpoint == "chat"
    body: dict[str, Any] = {**head, "object": "chat.completion" if chat else "text_completion", "choices": []}
    for i in sorted(choices):
        acc = choices[i]
        if chat:
            msg: dict[str, Any] = {"role": acc.get("role", "assistant"), "content": acc.get("content") or None}
            if acc.get("reasoning_content"):
                msg["reasoning_content"] = acc["reasoning_content"]
            if acc.get("tool_calls"):
                msg["tool_calls"] = [acc["tool_calls"][n] for n in sorted(acc["tool_calls"])]
            body["choices"].append(
                {"index": i, "message": msg, "logprobs": None, "finish_reason": acc.get("finish_reason")}
            )
        else:
            body["choices"].append(
                {"index": i, "text": acc.get("text", ""), "logprobs": None, "finish_reason": acc.get("finish_reason")}
            )
    if usage:
        body["usage"] = usage
    return body


def _fold(acc: dict[str, Any], c: dict[str, Any], endpoint: str) -> None:
    if c.get("finish_reason"):
        acc["finish_reason"] = c["finish_reason"]
    if endpoint != "chat":
        acc["text"] = acc.get("text", "") + (c.get("text") or "")
        return
    delta = c.get("delta") or {}
    if delta.get("role"):
        acc["role"] = delta["role"]
    for field in ("content", "reasoning_content"):
        if delta.get(field):
            acc[field] = acc.get(field, "") + delta[field]
    for tc in delta.get("tool_calls") or []:
        calls = acc.setdefault("tool_calls", {})
        cur = calls.setdefault(
            int(tc.get("index", 0)), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if tc.get("id"):
            cur["id"] = tc["id"]
        if tc.get("type"):
            cur["type"] = tc["type"]
        fn = tc.get("function") or {}
        cur["function"]["name"] += fn.get("name") or ""
        cur["function"]["arguments"] += fn.get("arguments") or ""


FINISHED = frozenset({"stop", "tool_calls", "function_call", "eos"})


def storable(body: Any, cache_length_finish: bool) -> bool:
    """A complete, successful answer: choices present, each finished on its own (or at max_tokens
    when `cache_length_finish`), no error."""
    if not isinstance(body, dict) or "error" in body:
        return False
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for c in choices:
        reason = c.get("finish_reason") if isinstance(c, dict) else None
        if reason not in FINISHED and not (cache_length_finish and reason == "length"):
            return False
    return True
