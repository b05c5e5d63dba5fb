"""A SIMULATED engine that serves the Responses API and Anthropic's Messages API NATIVELY
(`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`, `POST /v1/messages`,
`POST /v1/messages/count_tokens`), for tests of the gateway's pass-through mode.

It has no model: each request is translated to chat completions by gateway/apis (the same
translators the gateway uses), sent to a chat-completions server (the simulated engine, or any
OpenAI-compatible one), and the answer is translated back, so what goes out is the real wire format
of each API (JSON bodies; SSE events with `event:` lines and, for Responses, `sequence_number`).
The key presented (Authorization: Bearer, or x-api-key) is the owner of stored responses. Every
answer carries `x-native-api: responses|messages` so a test can tell a native answer from a
gateway-translated one.

    native = await start_native_apis(engine.url)       # engine.url = "http://127.0.0.1:PORT/v1"
    AsyncOpenAI(base_url=native.url + "/v1", api_key="k").responses.create(...)
    AsyncAnthropic(base_url=native.url, api_key="k").messages.create(...)
    python -m loadtest.native_apis --chat-url http://127.0.0.1:9001/v1 --port 9200
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.apis.base import EVENT_STREAM, owner_of
from gateway.apis.messages import MessagesAdapter
from gateway.apis.responses import ResponsesAdapter
from gateway.errors import GatewayError, bad_request


@dataclass
class NativeApis:
    chat_url: str  # base URL of a chat-completions server, ".../v1"
    upstream_model: str | None = None  # model name sent upstream (default: the requested one)
    api_key: str | None = None  # if set, only this key is accepted (401 otherwise)
    responses: ResponsesAdapter = field(default_factory=ResponsesAdapter)
    messages: MessagesAdapter = field(default_factory=MessagesAdapter)
    requests: int = 0  # Responses / Messages requests
    chat_requests: int = 0  # chat completions relayed
    last_request: dict[str, Any] = field(default_factory=dict)  # the last native request body
    last_headers: dict[str, str] = field(default_factory=dict)  # ... and its headers
    runner: web.AppRunner | None = None
    port: int = 0
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/responses", self.post_responses)
        app.router.add_get("/v1/responses/{id}", self.get_response)
        app.router.add_delete("/v1/responses/{id}", self.delete_response)
        app.router.add_post("/v1/messages", self.post_messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/v1/chat/completions", self.chat_completions)  # like vLLM: chat too
        return app

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ handlers
    async def post_responses(self, request: web.Request) -> web.StreamResponse:
        return await self._translate(request, self.responses)

    async def post_messages(self, request: web.Request) -> web.StreamResponse:
        return await self._translate(request, self.messages)

    async def get_response(self, request: web.Request) -> web.Response:
        try:
            body = await self.responses.get(request.match_info["id"], self._owner(request))
        except GatewayError as err:
            return self._error(self.responses, err)
        return web.Response(body=body, content_type="application/json", headers=_mark("responses"))

    async def delete_response(self, request: web.Request) -> web.Response:
        try:
            body = await self.responses.delete(request.match_info["id"], self._owner(request))
        except GatewayError as err:
            return self._error(self.responses, err)
        return web.Response(body=body, content_type="application/json", headers=_mark("responses"))

    async def count_tokens(self, request: web.Request) -> web.Response:
        try:
            self._owner(request)
            body = self.messages.count_tokens(await _json(request))
        except GatewayError as err:
            return self._error(self.messages, err)
        return web.Response(body=body, content_type="application/json", headers=_mark("messages"))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """Chat completions relayed to the chat server as they are (an engine serves both)."""
        self.chat_requests += 1
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = await request.read()
        url = self.chat_url.rstrip("/") + "/chat/completions"
        async with self._session.post(url, data=body, headers={"Content-Type": "application/json"}) as up:
            out = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    # ------------------------------------------------------------------ internals
    def _owner(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not key or (self.api_key is not None and key != self.api_key):
            raise GatewayError(401, "Invalid or missing API key.", type="authentication_error")
        return owner_of("native", key)

    def _error(self, adapter: Any, err: GatewayError) -> web.Response:
        body, headers = adapter.error_body(err)
        return web.Response(
            status=err.status, body=body, content_type="application/json", headers={**headers, **_mark(adapter.name)}
        )

    async def _translate(self, request: web.Request, adapter: Any) -> web.StreamResponse:
        self.requests += 1
        try:
            owner = self._owner(request)
            payload = await _json(request)
            self.last_request = payload
            self.last_headers = dict(request.headers)
            tr = await adapter.parse(payload, request.headers, owner)
        except GatewayError as err:
            return self._error(adapter, err)
        chat = dict(tr.chat_payload)
        if self.upstream_model:
            chat["model"] = self.upstream_model
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self.chat_url.rstrip("/") + "/chat/completions", json=chat) as up:
            if not tr.stream or up.status >= 400:
                raw = await up.read()
                resp = web.Response(status=up.status, body=tr.body(raw, up.status), content_type="application/json")
                resp.headers.update(_mark(adapter.name))
                if up.status < 400:
                    await tr.settle(deployment="native")
                return resp
            out = web.StreamResponse(headers={"Content-Type": EVENT_STREAM, **_mark(adapter.name)})
            await out.prepare(request)
            st = tr.stream_translator()
            await out.write(st.start())
            done = False
            try:
                async for line in up.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    chunk = orjson.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise RuntimeError(str(chunk["error"]))
                    piece = st.feed(chunk)
                    if piece:
                        await out.write(piece)
            except (aiohttp.ClientError, RuntimeError, orjson.JSONDecodeError) as e:
                await out.write(st.fail(f"upstream stream failed: {e}"))
            else:
                await out.write(st.finish(None) if done else st.fail("upstream stream ended without [DONE]"))
                if done:
                    await tr.settle(deployment="native")
            await out.write_eof()
            return out


def _mark(name: str) -> dict[str, str]:
    return {"x-native-api": name}


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload


async def start_native_apis(chat_url: str, host: str = "127.0.0.1", port: int = 0, **options: Any) -> NativeApis:
    native = NativeApis(chat_url, **options)
    native.runner = web.AppRunner(native.app(), handler_cancellation=True, access_log=None)
    await native.runner.setup()
    await web.TCPSite(native.runner, host, port, reuse_address=True).start()
    native.port = native.runner.addresses[0][1]
    return native


def main() -> None:
    p = argparse.ArgumentParser(description="SIMULATED native Responses / Messages APIs over a chat engine")
    p.add_argument("--chat-url", required=True, help="chat-completions base URL, e.g. http://127.0.0.1:9001/v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9200)
    p.add_argument("--upstream-model")
    p.add_argument("--api-key")
    args = p.parse_args()

    async def run() -> None:
        native = await start_native_apis(
            args.chat_url, args.host, args.port, upstream_model=args.upstream_model, api_key=args.api_key
        )
        print(f"SIMULATED native Responses/Messages APIs on {native.url} over {args.chat_url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
