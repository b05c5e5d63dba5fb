"""Chat-completions chunks -> Anthropic Messages stream events.

    message_start (usage.input_tokens: the gateway's estimate; the real count follows in
    message_delta), ping                                                     (start)
    content_block_start / content_block_delta (text_delta | input_json_delta) / content_block_stop
    message_delta (stop_reason, stop_sequence, usage: output_tokens, input_tokens,
    cache_read_input_tokens), message_stop                                   (finish)
    event: error {"type": "error", "error": {"type": "api_error", ...}}     (fail)

One block is open at a time: text, or one tool_use per chat tool-call index; a new one closes the
previous. A late argument fragment for a closed call is dropped from the stream (a closed block
cannot grow) but kept in `tool_calls()`. Every event has an `event:` line (the SDK skips events
without one). Only choice 0 is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.apis.base import read_chunk, sse
from gateway.apis.messages.response import stop_reason, usage_of


class MessagesStream:
    def __init__(
        self,
        msg_id: str,
        model: str,
        input_estimate: int,
        client_name: Callable[[str], str],
        stop_sequences: list[str],
    ) -> None:
        self.msg_id, self.model = msg_id, model
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.finished = False
        self.failed = False  # fail() ran: send nothing more
        self._estimate = input_estimate
        self._client_name = client_name
        self._stops = stop_sequences
        self._matched: Any = None
        self._index = -1  # index of the open block (-1: none yet)
        self._open: str | None = None  # "text" | "tool" | None
        self._calls: dict[int, tuple[int, list[str]]] = {}  # chat index -> (block index, fragments)
        self._open_call = -1

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._estimate, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message}) + sse("ping", {"type": "ping"})

    def feed(self, event: dict[str, Any]) -> bytes:
        chunk = read_chunk(event)
        if chunk.error is not None:  # an error chunk mid-stream (vLLM, litellm): end the stream
            return self.fail(chunk.error)
        if chunk.usage is not None:
            self.usage = chunk.usage
        out = b""
        if chunk.text:
            if self._open != "text":
                out += self._open_block({"type": "text", "text": ""}, "text")
            out += sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._index,
                    "delta": {"type": "text_delta", "text": chunk.text},
                },
            )
        for call in chunk.tool_calls:
            out += self._call(call)
        if chunk.finish_reason is not None:
            self.finish_reason, self._matched = chunk.finish_reason, chunk.stop_reason
        return out

    def finish(self, usage: dict[str, Any] | None = None) -> bytes:
        if usage is not None:
            self.usage = usage
        out = self._close()
        reason, seq = stop_reason(self.finish_reason, self._matched, self._stops)
        u = usage_of(self.usage)
        delta_usage = {
            "output_tokens": u["output_tokens"],
            "input_tokens": u["input_tokens"],
            "cache_read_input_tokens": u["cache_read_input_tokens"],
        }
        self.finished = True
        return (
            out
            + sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": seq},
                    "usage": delta_usage,
                },
            )
            + sse("message_stop", {"type": "message_stop"})
        )

    def fail(self, message: str) -> bytes:
        self.failed = True
        return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})

    def tool_calls(self) -> dict[int, str]:
        """Chat tool-call index -> the whole arguments text seen."""
        return {i: "".join(frags) for i, (_, frags) in self._calls.items()}

    # ------------------------------------------------------------------ internals
    def _open_block(self, block: dict[str, Any], kind: str) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + sse(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        self._open_call = -1
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        state = self._calls.get(index)
        if state is None:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{self.msg_id[4:28]}{index}"),
                "name": self._client_name(str(fn.get("name") or "")),
                "input": {},
            }
            out += self._open_block(block, "tool")
            state = self._calls[index] = (self._index, [])
            self._open_call = index
        args = fn.get("arguments")
        if args:
            state[1].append(args)
            if self._open_call == index:
                out += sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": state[0],
                        "delta": {"type": "input_json_delta", "partial_json": args},
                    },
                )
        return out
