"""Response bodies and SSE events, byte for byte in vLLM's (or, for remote, OpenAI's) format.

vLLM serialises stream chunks with `model_dump_json(exclude_unset=True)` and writes
`data: <json>\n\n`; the first chunk per choice carries delta {"role":"assistant",
"content":""}, each token chunk {"content": "..."}, the last one finish_reason plus
stop_reason; with stream_options.include_usage a final chunk with "choices": [] and the
usage follows (no "usage": null elsewhere), then `data: [DONE]\n\n`.
OpenAI (remote profile) adds service_tier/system_fingerprint, "usage": null in every chunk
when include_usage is on, and sends finish_reason in a separate chunk with an empty delta.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_sim0000001"


def usage(prompt: int, completion: int, remote: bool, cached: int = 0) -> dict[str, Any]:
    if remote:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}


def content_delta(text: str) -> bytes:
    return orjson.dumps({"content": text})


def tool_header_delta(call_id: str, name: str) -> bytes:
    return orjson.dumps(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
    )


def tool_args_delta(fragment: str) -> bytes:
    return orjson.dumps({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})


class StreamChunks:
    """Builds the `data: ...\\n\\n` events of one streamed chat or text completion."""

    __slots__ = ("chat", "remote", "_head", "_end")

    def __init__(self, chat: bool, remote: bool, rid: str, created: int, model: str, include_usage: bool) -> None:
        self.chat = chat
        self.remote = remote and chat
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s' % (
            rid.encode(),
            obj,
            created,
            orjson.dumps(model),
        )
        if self.remote:
            head += b',"service_tier":"default","system_fingerprint":"%s"' % FINGERPRINT.encode()
        self._head = head + b',"choices":['
        self._end = b',"usage":null}\n\n' if (self.remote and include_usage) else b"}\n\n"

    def role(self, index: int, usage_now: dict[str, Any] | None = None) -> bytes:
        delta = (
            b'{"role":"assistant","content":"","refusal":null}' if self.remote else b'{"role":"assistant","content":""}'
        )
        return self.chunk(index, delta, None, usage_now)

    def chunk(
        self,
        index: int,
        delta: bytes,
        finish: str | None = None,
        usage_now: dict[str, Any] | None = None,
        logprobs: bytes = b"null",
    ) -> bytes:
        """A chat chunk (delta = JSON bytes) or, for completions, delta = JSON string bytes of the text;
        `logprobs`: the JSON of the chunk's token logprobs when asked for."""
        if self.chat:
            body = b'{"index":%d,"delta":%s,"logprobs":%s,"finish_reason":' % (index, delta, logprobs)
        else:
            body = b'{"index":%d,"text":%s,"logprobs":%s,"finish_reason":' % (index, delta, logprobs)
        if finish is None:
            body += b'null,"stop_reason":null}' if not self.chat else b"null}"
        elif self.remote:
            body += b'"%s"}' % finish.encode()
        else:
            body += b'"%s","stop_reason":null}' % finish.encode()
        if usage_now is not None:
            return self._head + body + b'],"usage":' + orjson.dumps(usage_now) + b"}\n\n"
        return self._head + body + b"]" + self._end

    def finish_only(self, index: int, finish: str) -> bytes:
        """OpenAI's separate finish chunk (empty delta)."""
        return self.chunk(index, b"{}", finish)

    def usage_chunk(self, usage_obj: dict[str, Any]) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage_obj) + b"}\n\n"


def chat_body(
    remote: bool, rid: str, created: int, model: str, choices: list[dict[str, Any]], usage_obj: dict[str, Any]
) -> bytes:
    """choices: dicts with index, content (str|None), tool_calls (list|None), finish_reason."""
    out = []
    for ch in choices:
        if remote:
            msg: dict[str, Any] = {"role": "assistant", "content": ch["content"], "refusal": None, "annotations": []}
            if ch.get("tool_calls"):
                msg["tool_calls"] = ch["tool_calls"]
            out.append(
                {
                    "index": ch["index"],
                    "message": msg,
                    "logprobs": ch.get("logprobs"),
                    "finish_reason": ch["finish_reason"],
                }
            )
        else:
            msg = {
                "role": "assistant",
                "content": ch["content"],
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
            }
            if ch.get("tool_calls"):
                msg["tool_calls"] = ch["tool_calls"]
            msg["reasoning_content"] = None
            out.append(
                {
                    "index": ch["index"],
                    "message": msg,
                    "logprobs": ch.get("logprobs"),
                    "finish_reason": ch["finish_reason"],
                    "stop_reason": None,
                }
            )
    if remote:
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": out,
            "usage": usage_obj,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    else:
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": out,
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {**usage_obj, "prompt_tokens_details": None},
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }
    return orjson.dumps(body)


def completion_body(
    rid: str, created: int, model: str, choices: list[dict[str, Any]], usage_obj: dict[str, Any]
) -> bytes:
    out = [
        {
            "index": ch["index"],
            "text": ch["text"],
            "logprobs": ch.get("logprobs"),
            "finish_reason": ch["finish_reason"],
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        for ch in choices
    ]
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": out,
            "usage": {**usage_obj, "prompt_tokens_details": None},
            "kv_transfer_params": None,
        }
    )


def embeddings_body(remote: bool, rid: str, created: int, model: str, vectors: list[Any], prompt_tokens: int) -> bytes:
    if remote:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )
    data = [{"index": i, "object": "embedding", "embedding": v} for i, v in enumerate(vectors)]
    return orjson.dumps(
        {
            "id": rid,
            "object": "list",
            "created": created,
            "model": model,
            "data": data,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )


def models_body(names: list[str], owned_by: str, created: int, max_model_len: int, perm_id: str, remote: bool) -> bytes:
    if remote:
        data = [{"id": n, "object": "model", "created": created, "owned_by": owned_by} for n in names]
        return orjson.dumps({"object": "list", "data": data})
    data = [
        {
            "id": n,
            "object": "model",
            "created": created,
            "owned_by": owned_by,
            "root": n,
            "parent": None,
            "max_model_len": max_model_len,
            "permission": [
                {
                    "id": perm_id,
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        for n in names
    ]
    return orjson.dumps({"object": "list", "data": data})
