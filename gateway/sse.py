"""Server-sent events relay: forwards upstream SSE bytes as they arrive, never re-serialized.

Upstream chunks are cut at event boundaries only (a half event waits for its other half, usually a
few bytes later), so the relay can look at whole events. It does so only when an event may carry
token usage (a cheap byte search for `"usage"`), which is how the gateway learns the usage of a
streamed answer. When the gateway itself added `stream_options.include_usage` (the client did not
ask), the relay drops the extra usage-only chunk (`"choices":[]`) and the `"usage":null` fields some
APIs add to every chunk, so the client receives exactly the stream it asked for.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from backends.base import MAX_UPSTREAM_EVENT_BYTES, UpstreamConnectError

# An upstream's usage is never trusted for arithmetic without bounds: counts must be integers in
# [0, MAX_REPORTED_TOKENS]; anything else is "no usage reported" (limits keep the reservation).
MAX_REPORTED_TOKENS = 10_000_000
# One SSE event (what the relay holds while waiting for its end) may not grow past this by default
# (server.max_upstream_event_bytes: Backend.max_event_bytes).
MAX_EVENT_BYTES = MAX_UPSTREAM_EVENT_BYTES

_USAGE = b'"usage"'
_NULL_USAGE = (b',"usage":null', b'"usage":null,')
_DONE = b"data: [DONE]"


def _boundary(buf: bytes) -> int:
    """Index just past the last complete event in buf (0 if none)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)")


def _split_events(block: bytes) -> list[bytes]:
    """Split complete events, each keeping its own terminator byte for byte."""
    return [e for e in _EVENT_END.split(block) if e]


def _event_json(event: bytes) -> Any:
    lines = event.replace(b"\r\n", b"\n").split(b"\n")
    data = b"\n".join(line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def valid_usage(usage: Any) -> dict[str, Any] | None:
    """The upstream's usage when its counts are sane (integers within bounds, cached <= prompt),
    else None: negative, textual or absurd figures never reach the gateway's arithmetic."""
    if not isinstance(usage, dict):
        return None
    counts = [usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)]
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        counts.append(details["cached_tokens"])
        if isinstance(counts[2], int) and isinstance(counts[0], int) and counts[2] > counts[0]:
            return None
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_REPORTED_TOKENS:
            return None
    return usage


class SSERelay:
    __slots__ = ("_buf", "_strip", "usage", "done", "max_event_bytes")

    def __init__(self, strip_usage: bool, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._strip = strip_usage
        self.usage: dict[str, Any] | None = None
        self.done = False  # saw `data: [DONE]`: the upstream finished the stream cleanly
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the bytes to send to the client now (maybe empty)."""
        buf = self._buf + chunk if self._buf else chunk
        cut = _boundary(buf)
        if cut == 0:
            if len(buf) > self.max_event_bytes:  # memory is bounded: the stream counts as broken
                raise UpstreamConnectError(f"the upstream sent an SSE event over {self.max_event_bytes} bytes")
            self._buf = buf
            return b""
        complete, self._buf = buf[:cut], buf[cut:]
        if _DONE in complete:
            self.done = True
        if len(self._buf) > self.max_event_bytes:
            raise UpstreamConnectError(f"the upstream sent an SSE event over {self.max_event_bytes} bytes")
        if _USAGE not in complete:
            return complete
        return self._filter(complete)

    def flush(self) -> bytes:
        """End of upstream body: whatever is left (an unterminated tail). It ends the stream cleanly
        only if it holds `data: [DONE]` (sets `done`); else it is a cut event, not to be sent."""
        rest, self._buf = self._buf, b""
        if _DONE in rest:
            self.done = True
        return rest

    def _filter(self, complete: bytes) -> bytes:
        out: list[bytes] = []
        for event in _split_events(complete):
            if _USAGE in event:
                obj = _event_json(event)
                usage = obj.get("usage") if isinstance(obj, dict) else None
                if isinstance(usage, dict):
                    self.usage = valid_usage(usage)
                    if self._strip and obj.get("choices") == []:
                        continue  # the usage-only chunk the client did not ask for
                elif self._strip and usage is None:
                    for pattern in _NULL_USAGE:
                        event = event.replace(pattern, b"", 1)
            out.append(event)
        return b"".join(out)


def count_events(block: bytes) -> int:
    return len(_split_events(block))


def first_events(block: bytes, n: int) -> bytes:
    """The first n complete events of a block, byte for byte."""
    return b"".join(_split_events(block)[: max(0, n)])


def usage_of_body(body: bytes) -> dict[str, Any] | None:
    """Usage of a non-streamed OpenAI-format response body, if it has one."""
    if _USAGE not in body:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return valid_usage(obj.get("usage")) if isinstance(obj, dict) else None
