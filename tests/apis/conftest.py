"""Fixtures for the API translators: a scripted chat-completions server (answers queued by the test,
sent whole or as vLLM-style SSE chunks) and the native Responses / Messages server
(loadtest/native_apis.py) over it, which the official SDKs call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from loadtest.native_apis import NativeApis, start_native_apis


@dataclass
class Answer:
    text: str | None = "Hello from the scripted engine."
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, arguments JSON)
    finish: str | None = None  # default: tool_calls if calls else stop
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int = 0
    stop_reason: Any = None  # vLLM's matched stop string
    status: int = 200  # != 200: an OpenAI error body with this status
    cut: bool = False  # stream: end without [DONE] (the engine died mid-answer)


@dataclass
class ScriptedChat:
    answers: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def push(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        a = self.answers.pop(0) if self.answers else Answer()
        if a.status != 200:
            err = {"error": {"message": f"scripted {a.status}", "type": "x", "code": None, "param": None}}
            return web.Response(status=a.status, body=orjson.dumps(err), content_type="application/json")
        finish = a.finish or ("tool_calls" if a.calls else "stop")
        usage = {
            "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens,
            "total_tokens": a.prompt_tokens + a.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
        }
        head = {"id": "chatcmpl-1", "created": int(time.time()), "model": body["model"]}
        calls = [{"id": c, "type": "function", "function": {"name": n, "arguments": g}} for c, n, g in a.calls]
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": a.text}
            if calls:
                msg["tool_calls"] = calls
            choice = {"index": 0, "message": msg, "finish_reason": finish, "stop_reason": a.stop_reason}
            out = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.Response(body=orjson.dumps(out), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head["object"] = "chat.completion.chunk"

        async def send(delta: dict[str, Any], fin: str | None = None, **extra: Any) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin, **extra}
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n")

        await send({"role": "assistant", "content": ""})
        text = a.text or ""
        for i in range(0, len(text), 5):
            await send({"content": text[i : i + 5]})
        if a.cut:
            return resp
        for k, (cid, name, args) in enumerate(a.calls):
            await send({"tool_calls": [{"index": k, "id": cid, "type": "function", "function": {"name": name}}]})
            for i in range(0, len(args), 7):
                await send({"tool_calls": [{"index": k, "function": {"arguments": args[i : i + 7]}}]})
        await send({}, finish, stop_reason=a.stop_reason)
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def scripted(loopback_app: Callable[[web.Application], Any]) -> ScriptedChat:
    """A chat-completions engine on loopback that answers what the test queued."""
    chat = ScriptedChat()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat.handle)
    chat.url = await loopback_app(app) + "/v1"
    return chat


@pytest.fixture
async def native(scripted: ScriptedChat) -> AsyncIterator[NativeApis]:
    n = await start_native_apis(scripted.url)
    yield n
    await n.stop()
