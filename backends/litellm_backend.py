"""kind `litellm`: providers that do not speak OpenAI's wire format (Anthropic, Gemini, Bedrock ...)
through `litellm.acompletion`, translated to and from OpenAI's format.

The deployment's `model` is litellm's model string (`anthropic/claude-sonnet-4-5`,
`gemini/gemini-2.0-flash`, `bedrock/...`), the backend's `url` its `api_base` and `api_key` the
provider key. The gateway sees an ordinary `Upstream`: a non-streamed answer is one OpenAI
`chat.completion` JSON body; a streamed one is OpenAI SSE bytes (`chat.completion.chunk` events,
tool calls as OpenAI `tool_calls` deltas, a final `choices: []` usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`), built here once per chunk. Provider
errors become OpenAI-shaped error bodies with the provider's status (401/403 -> the gateway's 502,
429 with its Retry-After, 5xx retryable); connection failures and timeouts raise like the
pass-through's, so retries, breakers and fallbacks work the same. litellm's own retries are off.

litellm is heavy (~170 MB, seconds to import): it is imported only when a `litellm` backend starts,
in a worker thread so the event loop keeps serving. Offline-safe defaults are set first
(`LITELLM_LOCAL_MODEL_COST_MAP`, `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`). The request body is
decoded here (orjson): a translating backend needs its structure; the pass-through never does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from backends.base import Backend, Upstream, UpstreamConnectError, UpstreamTimeout, UpstreamTooLarge

OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
JSON = {"Content-Type": "application/json"}
SSE = {"Content-Type": "text/event-stream; charset=utf-8"}


def import_litellm() -> Any:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def _tool_calls(calls: Any, delta: bool) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for i, c in enumerate(calls):
        fn = c.function
        entry: dict[str, Any] = {"index": getattr(c, "index", None) or i} if delta else {}
        if c.id:
            entry["id"] = c.id
        if c.id or not delta:
            entry["type"] = "function"
        f: dict[str, Any] = {}
        if fn.name:
            f["name"] = fn.name
        if fn.arguments is not None:
            f["arguments"] = fn.arguments
        entry["function"] = f
        out.append(entry)
    return out


def _usage(u: Any) -> dict[str, int] | None:
    if u is None:
        return None
    p, c = int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion_json(resp: Any) -> bytes:
    """A litellm ModelResponse as OpenAI's chat.completion body."""
    choices = []
    for ch in resp.choices:
        m = ch.message
        message: dict[str, Any] = {"role": m.role or "assistant", "content": m.content}
        calls = _tool_calls(m.tool_calls, delta=False)
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": ch.index, "message": message, "finish_reason": ch.finish_reason, "logprobs": None})
    return orjson.dumps(
        {
            "id": resp.id,
            "object": "chat.completion",
            "created": resp.created,
            "model": resp.model,
            "choices": choices,
            "usage": _usage(getattr(resp, "usage", None)),
        }
    )


class _Chunks:
    """litellm stream chunks -> OpenAI SSE events (bytes)."""

    def __init__(self, want_usage: bool) -> None:
        self.want_usage = want_usage
        self.usage: dict[str, int] | None = None
        self.head: dict[str, Any] | None = None

    def event(self, chunk: Any) -> bytes:
        if self.head is None:
            self.head = {
                "id": chunk.id,
                "object": "chat.completion.chunk",
                "created": chunk.created,
                "model": chunk.model,
            }
        usage = _usage(getattr(chunk, "usage", None))
        if usage is not None:
            self.usage = usage
        choices = []
        for ch in chunk.choices:
            d = ch.delta
            delta: dict[str, Any] = {}
            if d.role:
                delta["role"] = d.role
            if d.content is not None:
                delta["content"] = d.content
            calls = _tool_calls(d.tool_calls, delta=True)
            if calls:
                delta["tool_calls"] = calls
            if delta or ch.finish_reason:
                choices.append({"index": ch.index, "delta": delta, "finish_reason": ch.finish_reason, "logprobs": None})
        if not choices:
            return b""
        return b"data: " + orjson.dumps({**self.head, "choices": choices}) + b"\n\n"

    def tail(self) -> bytes:
        out = b""
        if self.want_usage and self.head is not None:
            out = b"data: " + orjson.dumps({**self.head, "choices": [], "usage": self.usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"


class LiteLLMUpstream(Upstream):
    def __init__(
        self,
        status: int,
        body: bytes = b"",
        stream: Any = None,
        first: Any = None,
        want_usage: bool = False,
        idle_s: float = 600.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or (SSE if stream is not None else JSON))
        self._body, self._stream, self._first = body, stream, first
        self._want_usage, self._idle_s = want_usage, idle_s

    async def read(self) -> bytes:
        if self._stream is None:
            return self._body
        return b"".join([c async for c in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if self._stream is None:
            yield self._body
            return
        conv = _Chunks(self._want_usage)
        chunk = self._first
        try:
            while chunk is not None:
                event = conv.event(chunk)
                if event:
                    yield event
                try:
                    async with asyncio.timeout(self._idle_s):
                        chunk = await self._stream.__anext__()
                except StopAsyncIteration:
                    chunk = None
        except TimeoutError:
            raise UpstreamTimeout(
                f"no data from upstream for {self._idle_s:g}s (idle timeout between chunks)", "idle"
            ) from None
        except Exception as e:  # the provider broke the stream (litellm raises its own exception types)
            raise UpstreamConnectError(f"upstream broke the stream: {e.__class__.__name__}") from None
        yield conv.tail()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and hasattr(stream, "aclose"):
            task = asyncio.get_running_loop().create_task(stream.aclose())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def release(self) -> None:
        return None


class LiteLLMBackend(Backend):
    _litellm: Any = None

    async def start(self) -> None:
        self._litellm = await asyncio.get_running_loop().run_in_executor(None, import_litellm)

    def _error(self, e: Exception) -> LiteLLMUpstream:
        status = int(getattr(e, "status_code", 0) or 500)
        message = str(e)
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        if key:
            message = message.replace(key, "***")
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "api_error")
        headers = dict(JSON)
        raw_headers = getattr(e, "litellm_response_headers", None) or getattr(
            getattr(e, "response", None), "headers", None
        )
        if raw_headers is not None and raw_headers.get("retry-after"):
            headers["Retry-After"] = raw_headers.get("retry-after")
        body = orjson.dumps({"error": {"message": message[:2000], "type": kind, "param": None, "code": status}})
        return LiteLLMUpstream(status, body, headers=headers)

    async def open(
        self,
        path: str,
        body: bytes,
        request_id: str,
        ttfb_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Upstream:
        assert self._litellm is not None, "backend not started"
        if path != "/chat/completions":
            return LiteLLMUpstream(
                404,
                orjson.dumps(
                    {
                        "error": {
                            "message": f"Backend `{self.name}` (litellm) serves chat completions only.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": 404,
                        }
                    }
                ),
            )
        litellm = self._litellm
        payload = orjson.loads(body)
        stream = bool(payload.pop("stream", False))
        options = payload.get("stream_options")
        want_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        kwargs: dict[str, Any] = {
            **payload,
            "stream": stream,
            "api_base": self.config.url,
            "drop_params": True,
            "num_retries": 0,
            "max_retries": 0,
            "timeout": self.timeouts.total_s or self.timeouts.read_s,
            "_skip_mcp_handler": True,  # litellm 1.106 would import its MCP proxy code for any request with tools
        }
        if self.config.api_key is not None:
            kwargs["api_key"] = self.config.api_key.get_secret_value()
        if self.config.headers:
            kwargs["extra_headers"] = dict(self.config.headers)
        ttfb = ttfb_s or self.ttfb_s
        try:
            async with asyncio.timeout(ttfb):
                resp = await litellm.acompletion(**kwargs)
                if not stream:
                    answer = completion_json(resp)
                    if len(answer) > self.max_body_bytes:  # litellm held it already; the gateway passes none on
                        raise UpstreamTooLarge(
                            f"the upstream answer is {len(answer)} bytes, over the {self.max_body_bytes} the gateway holds"
                        )
                    return LiteLLMUpstream(200, answer)
                try:
                    first = await resp.__anext__()
                except StopAsyncIteration:
                    first = None
        except TimeoutError:
            raise UpstreamTimeout(
                f"backend {self.name!r}: no first byte within {ttfb:g}s (time-to-first-byte timeout)", "ttfb"
            ) from None
        except UpstreamTooLarge:
            raise
        except litellm.Timeout:
            raise UpstreamTimeout(f"backend {self.name!r}: the provider timed out", "ttfb") from None
        except litellm.APIConnectionError as e:
            raise UpstreamConnectError(f"backend {self.name!r} unreachable: {e.__class__.__name__}") from None
        except Exception as e:  # provider status errors (litellm maps each to an exception with status_code)
            if getattr(e, "status_code", None) is None:
                raise UpstreamConnectError(f"backend {self.name!r} failed: {e.__class__.__name__}") from None
            return self._error(e)
        return LiteLLMUpstream(200, stream=resp, first=first, want_usage=want_usage, idle_s=self.idle_s)

    async def probe(self) -> bool:
        """Remote APIs have no free liveness endpoint: always up; breakers catch real failures."""
        return True
