"""Responses API request -> chat-completions payload.

Rules (see gateway/apis/README.md for the whole table):
- `instructions` -> a leading system message, sent but never stored (OpenAI: instructions of a
  previous response are not carried over).
- `input`: a string is one user message. Items: messages (role user / assistant / system /
  developer; developer -> system, which every engine's chat template knows), `function_call` ->
  assistant `tool_calls` (consecutive calls, and an assistant message just before them, make one
  assistant message), `function_call_output` -> a `tool` message. `reasoning` items are dropped:
  their `encrypted_content` only means something to OpenAI and chat has no field to send summaries
  back. `item_reference` -> 400 (its content is not here). Other item types (built-in tool calls and
  their outputs, unknown ones) and unknown content part types are dropped.
- `tools`: only `function` tools (flat Responses shape -> chat's nested one); built-in tools
  (web_search, file_search, computer, code_interpreter, mcp, custom ...) -> 400: the gateway cannot
  run them.
- Unsupported features that would change the answer's meaning -> 400: `background`, `conversation`,
  `prompt`. Unknown or advisory fields (`include`, `truncation`, `service_tier`, `prompt_cache_key`,
  `max_tool_calls`, `top_logprobs`, `safety_identifier`, `metadata`) are accepted and not sent upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import bad_request

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_PASS = ("temperature", "top_p", "user")


@dataclass(slots=True)
class ChatRequest:
    payload: dict[str, Any]  # the chat-completions body
    conversation: list[dict[str, Any]]  # history + this request's input as chat messages (no instructions)
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the Response object repeats


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_model")
    for name in ("background", "conversation", "prompt"):
        if body.get(name):
            raise bad_request(
                f"'{name}' is not supported by this gateway's Responses API (it is served over chat completions).",
                param=name,
                code="unsupported_parameter",
            )
    new = input_messages(body.get("input"))
    if not new and not history:
        raise bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    conversation = [*(history or ()), *new]
    messages = list(conversation)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("'instructions' must be a string.", param="instructions")
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    payload: dict[str, Any] = {"model": model, "messages": messages}
    tools = chat_tools(body.get("tools"))
    choice = body.get("tool_choice")
    if tools:
        payload["tools"] = tools
        if choice is not None:
            payload["tool_choice"], payload["tools"] = chat_tool_choice(choice, tools)
        if isinstance(body.get("parallel_tool_calls"), bool):
            payload["parallel_tool_calls"] = body["parallel_tool_calls"]
    for name in _PASS:
        if body.get(name) is not None:
            payload[name] = body[name]
    mot = body.get("max_output_tokens")
    if mot is not None:
        if not isinstance(mot, int) or isinstance(mot, bool) or mot < 1:
            raise bad_request("'max_output_tokens' must be a positive integer.", param="max_output_tokens")
        payload["max_tokens"] = mot
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        payload["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict):
        fmt = response_format(text.get("format"))
        if fmt is not None:
            payload["response_format"] = fmt
        if text.get("verbosity"):
            payload["verbosity"] = text["verbosity"]
    if body.get("stream") is True:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    echo = {
        "instructions": instructions,
        "max_output_tokens": mot,
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
        if isinstance(reasoning, dict)
        else {"effort": None, "summary": None},
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature"),
        "text": {"format": {"type": "text"}, **text} if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": choice if choice is not None else "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }
    return ChatRequest(payload, conversation, echo)


def input_messages(value: Any) -> list[dict[str, Any]]:
    """The `input` field as chat messages."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise bad_request("'input' must be a string or an array of input items.", param="input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request(f"input[{i}] must be an object.", param=f"input[{i}]")
        kind = item.get("type") or ("message" if "role" in item else None)
        if not isinstance(kind, str):
            raise bad_request(f"input[{i}].type must be a string.", param=f"input[{i}].type")
        if kind == "message":
            _add_message(out, item, i)
        elif kind == "function_call":
            _add_call(out, item, i)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"input[{i}].call_id is required.", param=f"input[{i}].call_id")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _output_text(item.get("output"), i)})
        elif kind == "item_reference":
            raise bad_request(
                f"input[{i}] has type 'item_reference', which this gateway does not support over chat completions "
                "(send the item itself, or previous_response_id).",
                param=f"input[{i}].type",
                code="unsupported_input_item",
            )
        else:  # reasoning (opaque to anything but OpenAI), built-in tool calls, unknown types: dropped
            continue
    return out


def _add_message(out: list[dict[str, Any]], item: dict[str, Any], i: int) -> None:
    raw = item.get("role")
    role = ROLES.get(raw) if isinstance(raw, str) else None
    if role is None:
        raise bad_request(
            f"input[{i}].role must be one of user, assistant, system, developer.", param=f"input[{i}].role"
        )
    content = _content(item.get("content"), i, role)
    out.append({"role": role, "content": content})


def _add_call(out: list[dict[str, Any]], item: dict[str, Any], i: int) -> None:
    call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise bad_request(f"input[{i}]: a function_call needs call_id and name.", param=f"input[{i}]")
    if not isinstance(args, str):
        args = orjson.dumps(args).decode()
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _content(value: Any, i: int, role: str) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise bad_request(f"input[{i}].content must be a string or an array of content parts.", param=f"input[{i}]")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise bad_request(
                f"input[{i}].content[{j}] must be an object with a string type.", param=f"input[{i}].content[{j}]"
            )
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad_request(
                    f"input[{i}].content[{j}]: only image_url images are supported (no file_id).",
                    param=f"input[{i}].content[{j}]",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind not in ("input_file", "input_image", "input_audio"):
            continue  # unknown part types are dropped (README)
        else:
            raise bad_request(
                f"input[{i}].content[{j}] has type '{kind}', which is not supported for role {role} "
                "(supported: input_text, output_text, refusal, input_image for user messages).",
                param=f"input[{i}].content[{j}].type",
                code="unsupported_content_part",
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)  # plain string: every engine's template takes it
    return parts


def _output_text(value: Any, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # input_text parts (images in tool output are not supported by chat)
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise bad_request(
                f"tools[{i}] has type '{kind}': this gateway serves the Responses API over chat completions and "
                "supports only function tools (built-in tools such as web_search or file_search cannot run here).",
                param=f"tools[{i}].type",
                code="unsupported_tool_type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"tools[{i}].name is required.", param=f"tools[{i}].name")
        fn: dict[str, Any] = {
            "name": name,
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            fn["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """(chat tool_choice, tools): `allowed_tools` narrows the tools list."""
    if choice in ("auto", "none", "required"):
        return choice, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, tools
    if kind == "allowed_tools":
        names = {t.get("name") for t in choice.get("tools") or () if isinstance(t, dict)}
        kept = [t for t in tools if t["function"]["name"] in names]
        return ("required" if choice.get("mode") == "required" else "auto"), kept or tools
    raise bad_request(
        "tool_choice must be auto, none, required, {type: function, name} or {type: allowed_tools}.",
        param="tool_choice",
    )


def response_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request("text.format.type must be text, json_object or json_schema.", param="text.format")
