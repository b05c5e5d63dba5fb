"""A SIMULATED Anthropic Messages API on loopback (no model, made-up text), for tests and demos of
the litellm backend.

`POST /v1/messages` answers like api.anthropic.com: a `message` object, or with `stream: true` the
SSE events message_start, content_block_start, ping, content_block_delta (text_delta /
input_json_delta), content_block_stop, message_delta, message_stop. When the request carries tools
(and tool_choice is not none) and the last user turn holds no tool_result, the answer is a short
text block followed by a tool_use block for the named tool (tool_choice {"type": "tool"}) or the
first one, its input built from the tool's input_schema. Errors use Anthropic's shape
`{"type": "error", "error": {"type", "message"}}`: 401 for a wrong x-api-key, 400 for a missing
max_tokens/messages, and any status injected with `fail_next`.

    sim = await start_anthropic_sim(api_key="sk-ant-test")   # sim.url = "http://127.0.0.1:PORT"
    python -m loadtest.anthropic_sim --port 9100 --api-key sk-ant-test
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

WORDS = "the engine answers with simulated words so tests can check the text arrives intact".split()


@dataclass
class AnthropicSim:
    api_key: str | None = None
    output_tokens: int = 12
    token_delay_s: float = 0.0
    requests: int = 0
    last_request: dict[str, Any] = field(default_factory=dict)
    last_headers: dict[str, str] = field(default_factory=dict)
    _faults: list[tuple[int, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, count: int = 1, kind: str = "overloaded_error") -> None:
        self._faults += [(status, kind)] * count

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.last_headers = dict(request.headers)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        self.last_request = body
        if self._faults:
            status, kind = self._faults.pop(0)
            return _error(status, kind, f"simulated {kind}")
        for required in ("model", "max_tokens", "messages"):
            if required not in body:
                return _error(400, "invalid_request_error", f"{required}: Field required")
        blocks, stop_reason = self._answer(body)
        msg_id = f"msg_sim{next(self._ids):020d}"
        usage_in = _tokens(orjson.dumps([body.get("system"), body["messages"], body.get("tools")]))
        usage_out = sum(_tokens(orjson.dumps(b)) if b["type"] == "tool_use" else len(b["text"].split()) for b in blocks)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
                },
                dumps=lambda o: orjson.dumps(o).decode(),
            )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        await _event(
            resp,
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": usage_in, "output_tokens": 1},
                },
            },
        )
        for i, block in enumerate(blocks):
            start = {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
            await _event(
                resp, "content_block_start", {"type": "content_block_start", "index": i, "content_block": start}
            )
            if i == 0:
                await _event(resp, "ping", {"type": "ping"})
            if block["type"] == "text":
                pieces = [w + " " for w in block["text"].split(" ")]
                pieces[-1] = pieces[-1].rstrip()
                deltas = [{"type": "text_delta", "text": p} for p in pieces]
            else:
                raw = orjson.dumps(block["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": raw[j : j + 8]} for j in range(0, len(raw), 8)]
            for delta in deltas:
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                await _event(resp, "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            await _event(resp, "content_block_stop", {"type": "content_block_stop", "index": i})
        await _event(
            resp,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage_out},
            },
        )
        await _event(resp, "message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp

    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        seed = int.from_bytes(hashlib.blake2b(orjson.dumps(body["messages"]), digest_size=4).digest(), "big")
        n = max(1, min(int(body["max_tokens"]), self.output_tokens))
        text = " ".join(WORDS[(seed + i) % len(WORDS)] for i in range(n))
        tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
        last = body["messages"][-1] if body["messages"] else {}
        answered = isinstance(last.get("content"), list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]
        )
        if tools and choice.get("type") != "none" and not answered:
            tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
            call = {
                "type": "tool_use",
                "id": f"toolu_sim{seed:08x}",
                "name": tool["name"],
                "input": _example(tool.get("input_schema") or {}),
            }
            return [{"type": "text", "text": "Let me check."}, call], "tool_use"
        return [{"type": "text", "text": text}], "max_tokens" if n == int(body["max_tokens"]) else "end_turn"


def _example(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = str(prop.get("type")) if isinstance(prop, dict) else ""
        out[name] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(kind, "example")
    return out


def _tokens(raw: bytes) -> int:
    return max(1, (len(raw) + 3) // 4)


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        content_type="application/json",
        body=orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}),
    )


async def _event(resp: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    await resp.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")


async def start_anthropic_sim(host: str = "127.0.0.1", port: int = 0, **options: Any) -> AnthropicSim:
    sim = AnthropicSim(**options)
    app = web.Application()
    app.router.add_post("/v1/messages", sim.handle)
    sim.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await sim.runner.setup()
    site = web.TCPSite(sim.runner, host, port, reuse_address=True)
    await site.start()
    sim.port = sim.runner.addresses[0][1]
    return sim


def main() -> None:
    p = argparse.ArgumentParser(description="SIMULATED Anthropic Messages API (no model, made-up text)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--api-key")
    args = p.parse_args()

    async def run() -> None:
        sim = await start_anthropic_sim(args.host, args.port, api_key=args.api_key)
        print(f"SIMULATED Anthropic Messages API (no model) listening on {sim.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
