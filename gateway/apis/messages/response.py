"""Chat completion -> Anthropic `message` object.

stop_reason: finish_reason stop -> end_turn, or stop_sequence (with `stop_sequence` set) when the
engine reports which stop string ended the answer (vLLM's `choice.stop_reason`) and it is one of the
request's stop_sequences; length -> max_tokens; tool_calls / function_call -> tool_use;
content_filter -> refusal. Usage: input_tokens excludes the prompt tokens read from the engine's
prefix cache, which go to cache_read_input_tokens (Anthropic's split); output_tokens as reported.
A tool call's arguments that are not a JSON object become `{"_raw_arguments": "<text>"}` (Anthropic's
`input` must be an object; the raw text is kept rather than lost).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.apis.base import choice0, usage_numbers

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
STOP["content_filter"] = "refusal"


def stop_reason(finish: Any, matched: Any, stop_sequences: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) from a chat finish_reason and the engine's matched stop, if any."""
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return (STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"), None


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    prompt, completion, cached, _ = usage_numbers(chat_usage)
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def from_chat(
    chat: dict[str, Any], msg_id: str, model: str, client_name: Any, stop_sequences: list[str]
) -> dict[str, Any]:
    choice = choice0(chat)
    raw = choice.get("message")
    message: dict[str, Any] = raw if isinstance(raw, dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": client_name(str(fn.get("name", ""))),
                "input": tool_input(str(fn.get("arguments") or "")),
            }
        )
    reason, seq = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences)
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": seq,
        "usage": usage_of(chat.get("usage")),
    }
