"""Pass-through answers: what the gateway reads from a backend's own Responses / Messages answer.

The bytes go to the client as received (never re-serialized); the gateway only reads, from the whole
body or from the few stream events that carry them, the usage (for limits, budgets, metrics: turned
into chat-completions numbers), whether the answer ended well, and for Responses the final response
object (its id and output, so a follow-up with `previous_response_id` is routed back to the backend
that holds it, or rebuilt from history if that backend is gone).

Stream events looked into (a byte search first, then one orjson.loads of that event):
  responses: response.created (id), response.completed / response.incomplete (final response,
             usage; done), response.failed / error (failed)
  messages:  message_start (input usage), message_delta (output usage), message_stop (done),
             error (failed)
"""

from __future__ import annotations

from typing import Any

import orjson

from backends.base import UpstreamConnectError
from gateway.apis.base import sse
from gateway.sse import MAX_EVENT_BYTES, _boundary, _event_json, _split_events

_MARKS = {
    "responses": (b"response.created", b"response.completed", b"response.incomplete", b"response.failed", b"error"),
    "messages": (b"usage", b"message_stop", b"error"),
}


def chat_usage(api: str, usage: Any) -> dict[str, Any] | None:
    """A Responses / Messages usage object as chat-completions usage (prompt tokens include cached)."""
    if not isinstance(usage, dict):
        return None
    n = _ints(usage)
    if api == "responses":
        details = usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        prompt, completion = n("input_tokens"), n("output_tokens")
    else:  # Anthropic's input_tokens leave out the cache reads and writes
        cached = n("cache_read_input_tokens")
        prompt = n("input_tokens") + cached + n("cache_creation_input_tokens")
        completion = n("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _ints(d: dict[str, Any]) -> Any:
    return lambda name: _int(d.get(name))


class NativeAnswer:
    """What was read from a native answer (a whole body, or a stream as it passes)."""

    def __init__(self, api: str, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.api = api
        self.max_event_bytes = max_event_bytes  # what the stream may hold of one event
        self.usage: dict[str, Any] | None = None  # chat-shaped
        self.response: dict[str, Any] | None = None  # Responses: the response object (final when done)
        self.done = False  # the answer ended well (a whole body; the stream's last event)
        self.failed = False  # an error event / a failed response
        self.events = 0  # stream events relayed (the next sequence_number of a Responses stream)
        self._raw_usage: dict[str, Any] = {}
        self._buf = b""
        self._marks = _MARKS[api]

    @property
    def response_id(self) -> str | None:
        rid = self.response.get("id") if self.response is not None else None
        return rid if isinstance(rid, str) and rid else None

    def read_body(self, body: bytes) -> None:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        if self.api == "responses":
            self.response = obj
            self.failed = obj.get("status") == "failed"
        self.usage = chat_usage(self.api, obj.get("usage"))
        self.done = not self.failed

    def feed(self, chunk: bytes) -> bytes:
        """Upstream stream bytes -> the complete events among them (byte for byte), read on the way."""
        buf = self._buf + chunk if self._buf else chunk
        cut = _boundary(buf)
        complete, self._buf = buf[:cut], buf[cut:]
        if len(self._buf) > self.max_event_bytes:  # memory is bounded: the stream counts as broken
            raise UpstreamConnectError(f"the upstream sent an SSE event over {self.max_event_bytes} bytes")
        if cut == 0:
            return b""
        self.events += complete.count(b"\n\n")
        if any(m in complete for m in self._marks):
            for event in _split_events(complete):
                if any(m in event for m in self._marks):
                    obj = _event_json(event)
                    if isinstance(obj, dict):
                        self._event(obj)
        return complete

    def flush(self) -> bytes:
        """End of the upstream body: an unterminated last event, ended here and read like the others
        (an answer whose final event lacks its blank line still ends well)."""
        rest, self._buf = self._buf, b""
        return self.feed(rest + b"\n\n") if rest.strip() else b""

    def failure_event(self, message: str) -> bytes:
        """The API's own end of a stream that broke after it began (the SDKs raise or report it)."""
        if self.api == "messages":
            return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})
        response = {**(self.response or {}), "status": "failed", "error": {"code": "server_error", "message": message}}
        return sse("response.failed", {"type": "response.failed", "sequence_number": self.events, "response": response})

    def _event(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "error":
            self.failed = True
        elif self.api == "responses":
            response = obj.get("response")
            if isinstance(response, dict) and isinstance(kind, str):
                self.response = response
                if kind in ("response.completed", "response.incomplete"):
                    self.done = True
                    self.usage = chat_usage("responses", response.get("usage"))
                elif kind == "response.failed":
                    self.failed = True
        else:
            usage = obj.get("usage")
            if kind == "message_start" and isinstance(obj.get("message"), dict):
                usage = obj["message"].get("usage")
            if isinstance(usage, dict):  # message_delta's counts are cumulative: the later wins
                self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
                self.usage = chat_usage("messages", self._raw_usage)
            elif kind == "message_stop":
                self.done = True
