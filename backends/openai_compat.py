"""Raw pass-through to any OpenAI-compatible engine or API (vLLM, SGLang, TGI, llama.cpp,
mistral.rs, TEI, OpenAI, Groq, Together ...).

The request body goes out as the bytes the dispatcher prepared; the response comes back as bytes,
never parsed or re-serialized here. The backend's own API key is sent; the client's never is.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Mapping

import aiohttp

from backends.base import Backend, Upstream, UpstreamConnectError, UpstreamTimeout


class _AiohttpUpstream(Upstream):
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except asyncio.TimeoutError:
            raise UpstreamTimeout("upstream stopped sending the response body") from None
        except aiohttp.ClientError as e:
            raise UpstreamConnectError(f"upstream broke the response: {e.__class__.__name__}") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        # iter_any, not line iteration: SSE lines can pass aiohttp's 128 KiB line limit.
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except asyncio.TimeoutError:
            raise UpstreamTimeout("no data from upstream within the read timeout") from None
        except aiohttp.ClientPayloadError as e:
            raise UpstreamConnectError(f"upstream broke the stream: {e.__class__.__name__}") from None

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class OpenAICompatBackend(Backend):
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # limit=0: the gateway enforces concurrency itself (max_concurrency); aiohttp's default of
        # 100 connections would silently queue requests inside the client instead.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, connect=t.connect_s, sock_read=t.read_s)
        headers = {"Content-Type": "application/json", **self.config.headers}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self, path: str, body: bytes, request_id: str) -> Upstream:
        assert self._session is not None, "backend not started"
        try:
            resp = await self._session.post(
                self.config.url + path, data=body, headers={"X-Request-Id": request_id}
            )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"backend {self.name!r} did not answer in time") from None
        except aiohttp.ClientError as e:
            raise UpstreamConnectError(f"backend {self.name!r} unreachable: {e.__class__.__name__}") from None
        return _AiohttpUpstream(resp)

    async def probe(self) -> bool:
        assert self._session is not None, "backend not started"
        try:
            async with self._session.get(
                self.config.url + "/models", timeout=aiohttp.ClientTimeout(total=self.timeouts.connect_s)
            ) as resp:
                await resp.read()
                return resp.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
