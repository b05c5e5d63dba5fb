"""Raw pass-through to any OpenAI-compatible engine or API (vLLM, SGLang, TGI, llama.cpp,
mistral.rs, TEI, OpenAI, Groq, Together ...).

The request body goes out as the bytes the dispatcher prepared; the response comes back as bytes,
never parsed or re-serialized here. The backend's own API key is sent; the client's never is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp

from backends.base import Backend, Upstream, UpstreamConnectError, UpstreamTimeout, UpstreamTooLarge, read_bounded


class _AiohttpUpstream(Upstream):
    """`first_deadline` (loop time) bounds the first body byte; `idle_s` every later gap;
    `max_body_bytes` what `read()` holds of a whole answer."""

    __slots__ = ("_resp", "status", "headers", "_first_deadline", "_idle_s", "_max_body")

    def __init__(self, resp: aiohttp.ClientResponse, first_deadline: float, idle_s: float, max_body_bytes: int) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._first_deadline = first_deadline
        self._idle_s = idle_s
        self._max_body = max_body_bytes

    def _timeout(self, phase: str) -> UpstreamTimeout:
        what = {
            "ttfb": "no first byte from upstream in time (time-to-first-byte timeout)",
            "idle": f"no data from upstream for {self._idle_s:g}s (idle timeout between chunks)",
        }[phase]
        return UpstreamTimeout(what, phase)

    async def read(self) -> bytes:
        # Headers arrived within the time to first byte; the body follows them, so a stall while
        # reading it is an idle gap.
        try:
            async with asyncio.timeout(self._idle_s):
                return await read_bounded(self._resp.content, self._resp.content_length, self._max_body)
        except UpstreamTooLarge:
            self._resp.close()  # not read to its end: the connection cannot be reused
            raise
        except TimeoutError as e:
            if isinstance(e, aiohttp.ServerTimeoutError):
                raise UpstreamTimeout("upstream exceeded the total timeout", "total") from None
            raise self._timeout("idle") from None
        except aiohttp.ClientError as e:
            raise UpstreamConnectError(f"upstream broke the response: {e.__class__.__name__}") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        # iter_any, not line iteration: SSE lines can pass aiohttp's 128 KiB line limit.
        content = self._resp.content
        phase = "ttfb"
        try:
            async with asyncio.timeout_at(self._first_deadline):
                chunk = await content.readany()
            phase = "idle"
            while chunk:
                yield chunk
                async with asyncio.timeout(self._idle_s):
                    chunk = await content.readany()
        except TimeoutError as e:
            if isinstance(e, aiohttp.ServerTimeoutError):
                raise UpstreamTimeout("upstream exceeded the total timeout", "total") from None
            raise self._timeout(phase) from None
        except aiohttp.ClientError as e:
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
        # sock_read is not used: time to first byte and the idle gap are enforced per request
        # (_AiohttpUpstream), since the first may be set per model and differs from the second.
        timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, connect=t.connect_s)
        headers = {"Content-Type": "application/json", **self.auth_headers(), **self.config.headers}
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers=headers,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    def auth_headers(self) -> dict[str, str]:
        """The backend's own credentials (never the client's)."""
        if self.config.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self,
        path: str,
        body: bytes,
        request_id: str,
        ttfb_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Upstream:
        assert self._session is not None, "backend not started"
        ttfb = ttfb_s or self.ttfb_s
        deadline = asyncio.get_running_loop().time() + ttfb
        try:
            async with asyncio.timeout_at(deadline):
                extra = {"X-Request-Id": request_id, **headers} if headers else {"X-Request-Id": request_id}
                resp = await self._session.post(self.config.url + path, data=body, headers=extra)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeout(
                f"backend {self.name!r}: connect timeout ({self.timeouts.connect_s:g}s)", "connect"
            ) from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamTimeout(f"backend {self.name!r}: total timeout ({self.timeouts.total_s}s)", "total") from None
        except TimeoutError:
            raise UpstreamTimeout(
                f"backend {self.name!r}: no first byte within {ttfb:g}s (time-to-first-byte timeout)", "ttfb"
            ) from None
        except aiohttp.ClientError as e:
            raise UpstreamConnectError(f"backend {self.name!r} unreachable: {e.__class__.__name__}") from None
        return _AiohttpUpstream(resp, deadline, self.idle_s, self.max_body_bytes)

    async def probe(self) -> bool:
        assert self._session is not None, "backend not started"
        try:
            async with self._session.get(
                self.config.url + "/models", timeout=aiohttp.ClientTimeout(total=self.timeouts.connect_s)
            ) as resp:
                await read_bounded(resp.content, resp.content_length, self.max_body_bytes)
                return resp.status < 500
        except (TimeoutError, aiohttp.ClientError, UpstreamTooLarge):
            return False
