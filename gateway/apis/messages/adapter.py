"""The Anthropic Messages adapter (`POST /v1/messages`, `POST /v1/messages/count_tokens`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.apis.base import chat_error, estimate_payload, new_id
from gateway.apis.messages.errors import anthropic_headers, error_body, error_json
from gateway.apis.messages.request import ToolNames, to_chat
from gateway.apis.messages.response import from_chat
from gateway.apis.messages.stream import MessagesStream
from gateway.errors import GatewayError, bad_request
from gateway.limits.estimate import Counter, bytes_counter, prompt_tokens


class MessagesTranslated:
    def __init__(
        self, model: str, stream: bool, chat_payload: dict[str, Any], names: ToolNames, stops: list[str], count: Counter
    ) -> None:
        self.model, self.stream = model, stream
        self.chat_payload = chat_payload
        self.message_id = new_id("msg_")
        self.usage: dict[str, Any] | None = None
        self._names, self._stops, self._count = names, stops, count
        self._stream: MessagesStream | None = None
        self.pin: str | None = None  # (the Messages API has no server-side state)
        self.native_allowed = True
        self.error: GatewayError | None = None  # the translation's refusal (pass-through only)

    def body(self, chat_body: bytes, status: int) -> bytes:
        if status >= 400:
            return error_json(status, chat_error(chat_body)[0])
        try:
            chat = orjson.loads(chat_body)
        except orjson.JSONDecodeError:
            chat = None
        if not isinstance(chat, dict):
            return error_json(502, "The upstream answer is not JSON.")
        self.usage = chat.get("usage") if isinstance(chat.get("usage"), dict) else None
        return orjson.dumps(from_chat(chat, self.message_id, self.model, self._names.client, self._stops))

    def stream_translator(self) -> MessagesStream:
        estimate = prompt_tokens("chat", self.chat_payload, self._count)
        self._stream = MessagesStream(self.message_id, self.model, estimate, self._names.client, self._stops)
        return self._stream

    async def settle(self, deployment: str | None = None) -> None:
        if self._stream is not None:
            self.usage = self._stream.usage


class MessagesAdapter:
    name = "messages"
    native_path = "/v1/messages"

    def __init__(self, count: Counter = bytes_counter) -> None:
        self._count = count  # token counter for estimates (gateway/limits/estimate.py load_counters)

    async def parse(
        self, payload: dict[str, Any], headers: Mapping[str, str], owner: str | None, native_ok: bool = False
    ) -> MessagesTranslated:
        """`native_ok`: some deployment serves the Messages API itself, so a request the translation
        refuses (a built-in tool, an unknown block) is kept (`error` set) for those."""
        stream = payload.get("stream", False)
        if stream not in (True, False, None):
            raise bad_request("stream: must be a boolean", param="stream")
        try:
            req = to_chat(payload)
        except GatewayError as e:
            if not native_ok or e.status != 400 or not isinstance(payload.get("model"), str):
                raise
            tr = MessagesTranslated(
                payload["model"], bool(stream), estimate_payload(payload), ToolNames(), [], self._count
            )
            tr.error = e
            return tr
        return MessagesTranslated(
            payload["model"], bool(stream), req.payload, req.names, req.stop_sequences, self._count
        )

    def rate_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The gateway's rate-limit and Retry-After headers with Anthropic's names added."""
        return anthropic_headers(headers)

    def error_body(self, err: GatewayError) -> tuple[bytes, dict[str, str]]:
        return error_body(err)

    def count_tokens(self, payload: dict[str, Any]) -> bytes:
        """Body of POST /v1/messages/count_tokens: {"input_tokens": N}, an estimate with the gateway's
        counter over the translated chat request (max_tokens is not required here, as at Anthropic)."""
        return orjson.dumps({"input_tokens": count_tokens(payload, self._count)})


def count_tokens(payload: dict[str, Any], count: Counter = bytes_counter) -> int:
    """Estimated input tokens of a Messages request (system, messages, tools), as chat counts them."""
    req = to_chat({"max_tokens": 1, **payload, "stream": False})
    return prompt_tokens("chat", req.payload, count)
