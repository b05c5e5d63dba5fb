"""The seam between the request path and the API translators (Responses, Anthropic Messages).

The gateway speaks chat completions to engines. An API adapter turns a request of another API into a
chat-completions payload (`parse`), and turns the chat answer back into that API's wire format: a
whole body (`Translated.body`) or a stream, one upstream chat chunk at a time
(`Translated.stream_translator()` -> `StreamTranslator`). Everything here is pure: no I/O except the Responses
state store, which `parse` (history of `previous_response_id`) and `Translated.settle` (save the
answer) await.

Refinements of the protocol first sketched for issue #14, and why:
- `parse` is async and takes the caller's `owner` (see `owner_of`): a Responses request with
  `previous_response_id` reads its history from the state store (SQLite / Redis are I/O), and a
  stored response must never be read by another team or key.
- `Translated.settle(deployment)` (async): called once after the answer went out (body or stream
  finished); the Responses adapter saves the conversation there (never when `store` is false, never
  for a failed or cut answer). The Messages adapter does nothing.
- `Translated.usage`: the chat usage dict seen (body or stream), for limits and budgets.
- `body()` also translates an error answer (status >= 400, OpenAI-shaped) into this API's error
  shape, so every non-stream answer goes through it. The body is always JSON (`JSON` below); a
  stream is always `EVENT_STREAM`.
- `Translated.stream_translator()` (not `stream()`): `stream` is the bool attribute "the client asked
  for a stream"; one name cannot be both. Call it once per request (it holds the stream's state).
- `StreamTranslator.start()` emits eagerly (`response.created` / `message_start`): the requested model
  name is known from the request, so nothing waits for the first upstream chunk.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import orjson

from gateway.errors import GatewayError

JSON = "application/json"
EVENT_STREAM = "text/event-stream; charset=utf-8"


class StreamTranslator(Protocol):
    usage: dict[str, Any] | None  # the chat usage seen so far (the include_usage chunk)
    finished: bool  # finish() ran: the answer is whole
    failed: bool  # fail() ran (also when feed() got an {"error": ...} chunk): send nothing more

    def start(self) -> bytes: ...

    def feed(self, event: dict[str, Any]) -> bytes: ...

    def finish(self, usage: dict[str, Any] | None = None) -> bytes: ...

    def fail(self, message: str) -> bytes: ...


class Translated(Protocol):
    chat_payload: dict[str, Any]  # what to send upstream (chat completions)
    model: str  # the alias the client asked for
    stream: bool
    usage: dict[str, Any] | None  # chat usage seen (after body() or the stream's end)

    def body(self, chat_body: bytes, status: int) -> bytes: ...

    def stream_translator(self) -> StreamTranslator: ...

    async def settle(self, deployment: str | None = None) -> None: ...


class ApiAdapter(Protocol):
    name: str  # "responses" | "messages"
    native_path: str  # "/v1/responses" | "/v1/messages"

    async def parse(self, payload: dict[str, Any], headers: Mapping[str, str], owner: str | None) -> Translated: ...

    def error_body(self, err: GatewayError) -> tuple[bytes, dict[str, str]]: ...

    def rate_headers(self, headers: Mapping[str, str]) -> dict[str, str]: ...


def owner_of(team: str, key_name: str) -> str:
    """The owner of stored state: one team's one key. Stored responses are visible to it only."""
    return f"{team}\x1f{key_name}"


def new_id(prefix: str) -> str:
    """`resp_` / `msg_` / `fc_` ... + 48 hex digits (the length OpenAI uses)."""
    return prefix + secrets.token_hex(24)


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event with an `event:` line (the Anthropic SDK skips events without one)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def chat_error(chat_body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) of an OpenAI-shaped error body from upstream (or the gateway)."""
    try:
        obj = orjson.loads(chat_body)
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        msg = err.get("message")
        code, param = err.get("code"), err.get("param")
        return (
            str(msg) if msg else "The upstream model returned an error.",
            str(code) if code is not None else None,
            str(param) if param is not None else None,
        )
    if isinstance(err, str):
        return err, None, None
    text = chat_body[:500].decode("utf-8", "replace").strip()
    return text or "The upstream model returned an error.", None, None


class ChatChunk(NamedTuple):
    """What a translating stream reads of one streamed chat completion chunk (choice index 0)."""

    error: str | None  # an error chunk sent mid-stream (vLLM, litellm): its message
    usage: dict[str, Any] | None
    text: Any  # delta.content
    tool_calls: list[dict[str, Any]]  # delta.tool_calls fragments
    finish_reason: str | None
    stop_reason: Any  # vLLM's matched stop string, beside finish_reason


def read_chunk(chunk: dict[str, Any]) -> ChatChunk:
    """One chunk as the translating streams (Messages, Responses) read it. A usage-only chunk, or
    another choice's delta, carries no text, tool calls or finish reason."""
    err = chunk.get("error")
    if err is not None:
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        else:
            message = str(err) if err else "The upstream stream failed."
        return ChatChunk(message, None, None, [], None, None)
    usage = chunk.get("usage")
    usage = usage if isinstance(usage, dict) else None
    choices = chunk.get("choices")
    choice = choices[0] if choices else None
    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
        return ChatChunk(None, usage, None, [], None, None)
    delta = choice.get("delta")
    text, calls = None, []
    if isinstance(delta, dict):
        text = delta.get("content")
        calls = [c for c in delta.get("tool_calls") or () if isinstance(c, dict)]
    reason = choice.get("finish_reason")
    if not (reason and isinstance(reason, str)):
        return ChatChunk(None, usage, text, calls, None, None)
    return ChatChunk(None, usage, text, calls, reason, choice.get("stop_reason"))


def choice0(chat: dict[str, Any]) -> dict[str, Any]:
    choices = chat.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def usage_numbers(usage: dict[str, Any] | None) -> tuple[int, int, int, int]:
    """(prompt, completion, cached prompt, reasoning) tokens of a chat usage dict (zeros if absent)."""
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    pd, cd = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    cached = _int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0
    reasoning = _int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0
    return prompt, completion, cached, reasoning


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def estimate_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat payload standing in for a request the translation refused but a backend's own API
    takes (pass-through only): the request's JSON as the prompt, for the token estimate and limits."""
    out: dict[str, Any] = {
        "model": payload.get("model"),
        "messages": [{"role": "user", "content": orjson.dumps(payload).decode()}],
    }
    for name in ("max_output_tokens", "max_tokens"):
        v = payload.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out["max_tokens"] = v
    if payload.get("stream") is True:
        out["stream"] = True
    return out


def text_of(content: Any) -> str:
    """Plain text of a chat message content (string or list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
