"""Chat completion -> Responses API `response` object (also the skeleton the stream events carry).

Status: `completed`, or `incomplete` with `incomplete_details.reason` = `max_output_tokens` (chat
finish_reason `length`) / `content_filter`; `failed` with `error` for a stream cut after it began.
Engine reasoning text (`reasoning_content` / `reasoning`) is not returned (no reasoning item): the
usage still counts its tokens in `output_tokens_details.reasoning_tokens` when the engine reports them.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.apis.base import choice0, new_id, usage_numbers

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def skeleton(resp_id: str, model: str, echo: dict[str, Any], created_at: int | None = None) -> dict[str, Any]:
    """A response object in progress: no output yet."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": echo.get("previous_response_id"),
        "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
        "store": echo.get("store", True),
        "temperature": echo.get("temperature"),
        "text": echo.get("text") or {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools") or [],
        "top_p": echo.get("top_p"),
        "truncation": echo.get("truncation", "disabled"),
        "usage": None,
        "user": echo.get("user"),
        "metadata": echo.get("metadata") or {},
    }


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt, completion, cached, reasoning = usage_numbers(chat_usage)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def finalize(resp: dict[str, Any], finish_reason: str | None, chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    """Set status / incomplete_details / usage on a response object (in place) and return it."""
    reason = INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    resp["status"] = "incomplete" if reason else "completed"
    resp["incomplete_details"] = {"reason": reason} if reason else None
    if not reason:
        resp["completed_at"] = int(time.time())
    resp["usage"] = usage_of(chat_usage)
    return resp


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def output_of(message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """A chat assistant message -> Responses output items (message first, then function calls)."""
    out: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        out.append(message_item(new_id("msg_"), content, status))
    elif message.get("refusal"):
        item = message_item(new_id("msg_"), "", status)
        item["content"] = [{"type": "refusal", "refusal": str(message["refusal"])}]
        out.append(item)
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        out.append(
            call_item(
                new_id("fc_"),
                str(call.get("id") or new_id("call_")),
                str(fn.get("name", "")),
                str(fn.get("arguments") or ""),
                status,
            )
        )
    return out


def from_chat(chat: dict[str, Any], skel: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(response object, the assistant chat message to store) from a whole chat completion."""
    choice = choice0(chat)
    raw = choice.get("message")
    message: dict[str, Any] = raw if isinstance(raw, dict) else {}
    finish = choice.get("finish_reason")
    item_status = "incomplete" if isinstance(finish, str) and finish in INCOMPLETE else "completed"
    skel["output"] = output_of(message, item_status)
    finalize(skel, finish, chat.get("usage"))
    return skel, assistant_message(message.get("content"), message.get("tool_calls"))


def assistant_message(content: Any, tool_calls: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content if isinstance(content, str) else None}
    if tool_calls:
        msg["tool_calls"] = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name", ""),
                    "arguments": (c.get("function") or {}).get("arguments") or "",
                },
            }
            for c in tool_calls
            if isinstance(c, dict)
        ]
    return msg


def assistant_of_output(output: Any) -> dict[str, Any]:
    """A response's `output` items -> the chat assistant message they stand for (text of the message
    items, function_call items as tool_calls; reasoning and other items left out): the history kept
    for a pass-through answer, so a follow-up can be translated if its backend is gone."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or ""},
                }
            )
    return assistant_message("".join(texts) or None, calls)
