"""Chat-completions chunks -> Responses API stream events (each with `sequence_number`).

    response.created, response.in_progress                              (start)
    text:  response.output_item.added (message), response.content_part.added,
           response.output_text.delta ..., response.output_text.done,
           response.content_part.done, response.output_item.done
    call:  response.output_item.added (function_call), response.function_call_arguments.delta ...,
           response.function_call_arguments.done, response.output_item.done
    response.completed (usage) | response.incomplete (finish_reason length)   (finish)
    response.failed (status failed, error {code: server_error, message})      (fail)

An item closes when the next one opens (a tool call after text, another tool call), or at finish.
A late argument fragment for a call already closed still goes out as a delta of its item (rare: engines
send calls one after another). Only choice 0 is read (the Responses API has no `n`). Per chunk the
work is a few dict reads and one orjson.dumps per event sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.apis.base import new_id, read_chunk
from gateway.apis.responses.response import INCOMPLETE, call_item, finalize, message_item
from gateway.apis.responses.response import assistant_message as chat_assistant


class _Call:
    __slots__ = ("output_index", "item_id", "call_id", "name", "args", "open", "item")

    def __init__(self, output_index: int, call_id: str, name: str) -> None:
        self.output_index = output_index
        self.item_id = new_id("fc_")
        self.call_id = call_id
        self.name = name
        self.args: list[str] = []
        self.open = True
        self.item: dict[str, Any] | None = None  # the done item, once closed


class ResponsesStream:
    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response  # the skeleton (status in_progress, output [])
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.finished = False  # finish() ran: a whole answer
        self.failed = False  # fail() ran: send nothing more
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # items done, in output_index order
        self._text: list[str] | None = None  # the open message item's text
        self._text_id = ""
        self._text_index = 0
        self._texts: list[str] = []  # all text, for the stored assistant message
        self._calls: dict[int, _Call] = {}
        self._order: list[_Call] = []

    # ------------------------------------------------------------------ protocol
    def start(self) -> bytes:
        return self._event("response.created", {"response": self.response}) + self._event(
            "response.in_progress", {"response": self.response}
        )

    def feed(self, event: dict[str, Any]) -> bytes:
        chunk = read_chunk(event)
        if chunk.error is not None:  # an error chunk mid-stream (vLLM, litellm): end the stream
            return self.fail(chunk.error)
        if chunk.usage is not None:
            self.usage = chunk.usage
        out = b""
        if chunk.text:
            out += self._text_delta(chunk.text)
        for call in chunk.tool_calls:
            out += self._call_delta(call)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        return out

    def finish(self, usage: dict[str, Any] | None = None) -> bytes:
        if usage is not None:
            self.usage = usage
        out = self._close_all()
        self.response["output"] = self._output
        finalize(self.response, self.finish_reason, self.usage)
        self.finished = True
        kind = "response.incomplete" if self.finish_reason in INCOMPLETE else "response.completed"
        return out + self._event(kind, {"response": self.response})

    def fail(self, message: str) -> bytes:
        self.failed = True
        out = self._close_all("incomplete")
        self.response["output"] = self._output
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": message}
        return out + self._event("response.failed", {"response": self.response})

    def assistant_message(self) -> dict[str, Any]:
        """The answer as a chat assistant message (what the state store keeps)."""
        calls = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": "".join(c.args)}}
            for c in self._order
        ]
        return chat_assistant("".join(self._texts) or None, calls)

    # ------------------------------------------------------------------ internals
    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        obj = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

    def _next_index(self) -> int:
        return len(self._output)  # at most one item is open, and it is closed before the next opens

    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self._text is None:
            out += self._close_calls()
            self._text_index = self._next_index()
            self._text_id = new_id("msg_")
            self._text = []
            item = message_item(self._text_id, "", "in_progress")
            item["content"] = []
            out += self._event("response.output_item.added", {"output_index": self._text_index, "item": item})
            out += self._event(
                "response.content_part.added",
                {
                    "item_id": self._text_id,
                    "output_index": self._text_index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                },
            )
        self._text.append(text)
        self._texts.append(text)
        return out + self._event(
            "response.output_text.delta",
            {
                "item_id": self._text_id,
                "output_index": self._text_index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        state = self._calls.get(index)
        if state is None:
            out += self._close_text() + self._close_calls()
            state = _Call(self._next_index(), str(call.get("id") or new_id("call_")), str(fn.get("name") or ""))
            self._calls[index] = state
            self._order.append(state)
            item = call_item(state.item_id, state.call_id, state.name, "", "in_progress")
            out += self._event("response.output_item.added", {"output_index": state.output_index, "item": item})
        elif fn.get("name") and not state.name:
            state.name = str(fn["name"])
        args = fn.get("arguments")
        if args:
            state.args.append(args)
            if state.item is not None:  # a late fragment of a call already closed
                state.item["arguments"] = "".join(state.args)
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": state.item_id, "output_index": state.output_index, "delta": args},
            )
        return out

    def _close_text(self, status: str = "completed") -> bytes:
        if self._text is None:
            return b""
        text, self._text = "".join(self._text), None
        where = {"item_id": self._text_id, "output_index": self._text_index, "content_index": 0}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = message_item(self._text_id, text, status)
        self._output.append(item)
        return (
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**where, "part": part})
            + self._event("response.output_item.done", {"output_index": self._text_index, "item": item})
        )

    def _close_calls(self, status: str = "completed") -> bytes:
        out = b""
        for c in self._order:
            if c.open:
                c.open = False
                args = "".join(c.args)
                item = c.item = call_item(c.item_id, c.call_id, c.name, args, status)
                self._output.append(item)
                out += self._event(
                    "response.function_call_arguments.done",
                    {"item_id": c.item_id, "output_index": c.output_index, "name": c.name, "arguments": args},
                )
                out += self._event("response.output_item.done", {"output_index": c.output_index, "item": item})
        return out

    def _close_all(self, status: str | None = None) -> bytes:
        st = status or ("incomplete" if self.finish_reason in INCOMPLETE else "completed")
        return self._close_text(st) + self._close_calls(st)
