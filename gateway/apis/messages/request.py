"""Anthropic Messages request -> chat-completions payload.

Rules (gateway/apis/README.md has the table):
- `system` (string or text blocks) -> one leading system message (blocks joined by a blank line).
  `cache_control` anywhere is dropped (engines cache prefixes on their own).
- Content blocks: text; image (base64 -> data: URL, url) -> image_url part; assistant `tool_use`
  blocks -> one assistant message with `tool_calls` (parallel calls stay in one message);
  user `tool_result` blocks -> `tool` messages first (chat wants them right after the calls), then
  the rest of the turn as a user message; images inside a tool_result go to that user message;
  `is_error: true` prefixes the tool content with "Error: ". `thinking` / `redacted_thinking` blocks
  are dropped (only Anthropic can verify their signatures). A `document` with a text source is text;
  a `search_result` its title, source and text. An image, document, tool_use or tool_result the
  translation cannot send (a PDF, a file id, the wrong role) -> 400 (never sent half-translated);
  any other block type (built-in tool blocks, unknown ones) is dropped.
- `tools`: custom tools (no `type`, or "custom") with `input_schema` -> function tools; Anthropic's
  versioned built-in tools (bash_20250124, web_search_..., text_editor_...) -> 400.
- Tool names that chat refuses (^[a-zA-Z0-9_-]{1,64}$) are sent under a stable alias and mapped
  back in the answer (`ToolNames`).
- `tool_choice`: auto -> "auto", any -> "required", tool -> named, none -> "none";
  `disable_parallel_tool_use` -> parallel_tool_calls false.
- `max_tokens` is required (400 like Anthropic); `stop_sequences` -> stop; `temperature`, `top_p`,
  `top_k` (sent as is: vLLM / SGLang read it); `metadata.user_id` -> user. `thinking` is accepted and
  dropped (its budget is not a chat parameter); `anthropic-version` / `anthropic-beta` headers are
  accepted with any value (or none). Other top-level fields are ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import bad_request

_CHAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Known blocks that carry content the translation cannot send (dropping them would change the
# meaning): refused with 400. Every other type not translated (thinking, redacted_thinking,
# server_tool_use, web_search_tool_result, container_upload, unknown ones) is dropped.
_REFUSE_BLOCKS = frozenset(("image", "document", "tool_use", "tool_result"))


@dataclass(slots=True)
class ToolNames:
    """Anthropic tool name <-> the name sent to the engine (the same unless chat refuses it)."""

    to_chat: dict[str, str] = field(default_factory=dict)
    to_client: dict[str, str] = field(default_factory=dict)

    def chat(self, name: str) -> str:
        if _CHAT_NAME.match(name):
            return name
        alias = self.to_chat.get(name)
        if alias is None:
            digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
            alias = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:55] + "_" + digest
            self.to_chat[name], self.to_client[alias] = alias, name
        return alias

    def client(self, name: str) -> str:
        return self.to_client.get(name, name)


@dataclass(slots=True)
class ChatRequest:
    payload: dict[str, Any]
    names: ToolNames
    stop_sequences: list[str]


def to_chat(body: dict[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise bad_request("max_tokens: Field required", param="max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad_request("max_tokens: must be a positive integer", param="max_tokens")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages: Field required (a non-empty array)", param="messages")
    names = ToolNames()
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(msgs):
        _message(messages, m, i, names)
    payload: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    tools = _tools(body.get("tools"), names)
    choice = body.get("tool_choice")
    if tools:
        payload["tools"] = tools
        if isinstance(choice, dict):
            payload["tool_choice"] = _tool_choice(choice, names)
            if choice.get("disable_parallel_tool_use") is True:
                payload["parallel_tool_calls"] = False
    stops = body.get("stop_sequences")
    stop_list: list[str] = []
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad_request("stop_sequences: must be an array of strings", param="stop_sequences")
        stop_list = stops
        if stops:
            payload["stop"] = stops
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            payload[name] = body[name]
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str) and meta["user_id"]:
        payload["user"] = meta["user_id"]
    if body.get("stream") is True:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return ChatRequest(payload, names, stop_list)


def _system(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise bad_request("system: must be a string or an array of text blocks", param="system")
    texts = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise bad_request(f"system.{i}: only text blocks are allowed", param=f"system.{i}")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _message(out: list[dict[str, Any]], m: Any, i: int, names: ToolNames) -> None:
    role = m.get("role") if isinstance(m, dict) else None
    if role not in ("user", "assistant"):
        raise bad_request(f"messages.{i}.role: must be 'user' or 'assistant'", param=f"messages.{i}.role")
    content = m.get("content")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise bad_request(f"messages.{i}.content: must be a string or an array of blocks", param=f"messages.{i}")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str):
            raise bad_request(f"{where}: a content block must be an object with a string `type`", param=where)
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image" and role == "user":
            parts.append(_image(block.get("source"), where))
        elif kind == "document" and isinstance(block.get("source"), dict) and block["source"].get("type") == "text":
            parts.append({"type": "text", "text": str(block["source"].get("data", ""))})
        elif kind == "tool_use" and role == "assistant":
            calls.append(_call(block, where, names))
        elif kind == "tool_result" and role == "user":
            results.append(_result(block, where, parts))
        elif kind == "search_result":
            parts.append({"type": "text", "text": _search_text(block)})
        elif kind in _REFUSE_BLOCKS:
            raise bad_request(
                f"{where}: block type '{kind}' is not supported in a {role} message by this gateway (supported: text, "
                "image (user), document with a text source, search_result, tool_use (assistant), tool_result (user); "
                "other types are dropped)",
                param=where,
            )
        else:  # thinking, redacted_thinking, built-in tool blocks, unknown types: dropped (README)
            continue
    out.extend(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            msg["tool_calls"] = calls
        if text or calls:
            out.append(msg)
    elif parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})


def _search_text(block: dict[str, Any]) -> str:
    texts = [str(block.get("title") or ""), str(block.get("source") or "")]
    texts += [str(b.get("text", "")) for b in block.get("content") or () if isinstance(b, dict)]
    return "\n".join(t for t in texts if t)


def _image(source: Any, where: str) -> dict[str, Any]:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise bad_request(f"{where}.source: images must be base64 or url sources", param=f"{where}.source")


def _call(block: dict[str, Any], where: str, names: ToolNames) -> dict[str, Any]:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
        raise bad_request(f"{where}: tool_use needs id and name", param=where)
    args = block.get("input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": names.chat(name), "arguments": orjson.dumps(args if args is not None else {}).decode()},
    }


def _result(block: dict[str, Any], where: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.tool_use_id: Field required", param=f"{where}.tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text":
                texts.append(str(inner.get("text", "")))
            elif kind == "image":
                parts.append(_image(inner.get("source"), f"{where}.content.{k}"))  # chat tool messages are text
            elif kind == "document" and isinstance(inner.get("source"), dict):
                texts.append(str(inner["source"].get("data", "")))
            else:
                raise bad_request(f"{where}.content.{k}: block type '{kind}' is not supported", param=where)
        text = "\n".join(texts)
    else:
        raise bad_request(f"{where}.content: must be a string or an array of blocks", param=where)
    if block.get("is_error") is True:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _tools(tools: Any, names: ToolNames) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools: must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise bad_request(f"tools.{i}: must be an object", param=f"tools.{i}")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad_request(
                f"tools.{i}: tool type '{kind}' is an Anthropic built-in tool, which this gateway cannot run (only "
                "custom tools with an input_schema are supported)",
                param=f"tools.{i}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"tools.{i}.name: Field required", param=f"tools.{i}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise bad_request(f"tools.{i}.input_schema: Field required", param=f"tools.{i}.input_schema")
        fn: dict[str, Any] = {"name": names.chat(name), "parameters": schema}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict[str, Any], names: ToolNames) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": names.chat(choice["name"])}}
    raise bad_request("tool_choice: type must be auto, any, tool (with name) or none", param="tool_choice")
