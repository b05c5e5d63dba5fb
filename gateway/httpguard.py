"""Client connections under hostile or sloppy clients: aiohttp's request handler with bounds.

- A cap on open client connections (`server.max_connections`, lowered at start to fit the process's
  open-files limit). At the cap, a new connection evicts the connection that has been waiting
  longest WITHOUT a request in progress (an unfinished header, an idle keep-alive); if every
  connection is busy with a request, the new one is answered 503 `too_many_connections` and
  closed. Either way a rate-limited `connection_limit_reached` warning and
  `switchyard_client_connections_closed_total{reason="evicted"|"refused"}`.
- Timeouts: `header_timeout_s` from the connection opening (or the first byte of a next request)
  to the end of its headers, a trickle of bytes does not extend it; `body_timeout_s` from the end
  of the headers to the end of the body; `keepalive_timeout_s` for an idle keep-alive connection
  (aiohttp's own keep-alive timer). A connection past its timeout is closed.
- Half-close: a client that sends a whole request then shuts down its sending side
  (shutdown(SHUT_WR)) gets its answer; the connection closes after it. (aiohttp closed the
  connection on EOF, before answering.) The price: a client that goes away entirely while a
  non-streamed request waits on its upstream is only noticed when the answer is written; a stream
  notices at the next chunk.
- Requests aiohttp's parser refuses (a control character in a header, a header too long ...):
  one log line with the parser's reason (its first line, never the offending bytes, which may be
  a key) and a 400 in OpenAI's error shape; aiohttp logged a traceback holding the header and
  echoed it in a text/plain body.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from prometheus_client import Counter, Gauge

from gateway.errors import error_body
from gateway.logs import get_logger
from gateway.logsafe import one_line, redact

FD_RESERVE = 256  # open files kept for upstream connections' overhead, logs, Redis, the listener ...


def effective_cap(wanted: int) -> tuple[int, int]:
    """(connections allowed, open-files soft limit). Each client connection may hold one upstream
    connection, so the soft limit is raised (up to the hard limit) to 2 x cap + FD_RESERVE, and the
    cap lowered when it cannot be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted, soft
    return max(1, min(wanted, (soft - FD_RESERVE) // 2)), soft


class ConnectionGuard:
    """The server-wide state: settings, open connections (those without a request in progress in
    the order they became idle), metrics."""

    def __init__(self, server_config: Any, registry: Any) -> None:
        c = server_config
        self.header_timeout = c.header_timeout_s
        self.body_timeout = c.body_timeout_s
        self.keepalive_timeout = c.keepalive_timeout_s
        self.half_close_grace = c.half_close_grace_s
        self.write_timeout = c.write_timeout_s
        self.cap, self.nofile = effective_cap(c.max_connections)
        self.log = get_logger("switchyard")
        if self.cap < c.max_connections:
            self.log.warning(
                "connection_cap_lowered", max_connections=c.max_connections, cap=self.cap, open_files_limit=self.nofile
            )
        self.open = 0
        self.idle: dict[GuardedHandler, None] = {}  # insertion order = oldest idle first
        self.gauge = Gauge(
            "switchyard_client_connections",
            "Open client connections.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.closed = Counter(
            "switchyard_client_connections_closed",
            "Client connections the gateway closed or refused: header_timeout, body_timeout, write_timeout, "
            "evicted, refused.",
            ["reason"],
            registry=registry,
        )
        self._closed = {
            r: self.closed.labels(r) for r in ("header_timeout", "body_timeout", "write_timeout", "evicted", "refused")
        }

    def count(self, reason: str) -> None:
        self._closed[reason].inc()

    def admit(self, handler: GuardedHandler) -> bool:
        """Make room for a new connection: False when every open connection is busy."""
        if self.open >= self.cap:
            victim = next(iter(self.idle), None)
            if victim is None:
                self.count("refused")
                self.log.warning("connection_limit_reached", cap=self.cap, action="refused")
                return False
            self.count("evicted")
            self.log.warning("connection_limit_reached", cap=self.cap, action="evicted_idle")
            victim.drop()
        self.open += 1
        self.gauge.inc()
        self.idle[handler] = None
        return True

    def gone(self, handler: GuardedHandler) -> None:
        self.open -= 1
        self.gauge.dec()
        self.idle.pop(handler, None)


REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class GuardedHandler(RequestHandler):
    def __init__(self, manager: Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.keepalive_timeout, **kwargs)
        self._guard = guard
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind = ""
        self._body: Any = None  # the payload still arriving, while the body timer runs
        self._unanswered = 0  # requests whose headers arrived and whose answer is not finished
        self._write_deadline: asyncio.TimerHandle | None = None

    # ---- admission -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            body = error_body(
                "The gateway has too many open connections; retry shortly.",
                "service_unavailable",
                "too_many_connections",
            )
            self._manager = None  # never registered with the server: connection_lost has nothing to undo
            transport.write(REFUSED % (len(body), body))  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm("header_timeout", self._guard.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._disarm()
            self._write_unblocked()
            if self._admitted:
                self._admitted = False
                self._guard.gone(self)
        finally:  # whatever happens above, aiohttp's part runs: it cancels the running handler
            super().connection_lost(exc)

    def drop(self) -> None:
        """Close this (idle) connection to make room for a new one."""
        self._guard.idle.pop(self, None)
        self.force_close()

    # ---- timers --------------------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._deadline_kind = kind
        self._deadline = self._loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        kind = self._deadline_kind
        if kind == "header_timeout" and self._unanswered:
            return  # the next request's header started during a long answer: the keep-alive timer covers it
        self._guard.count(kind)
        self._guard.log.warning("client_timeout", kind=kind, peer=_peer(self.transport))
        self.force_close()

    # ---- a client that does not read -----------------------------------------------------------
    # The transport calls pause_writing when its send buffer passes the high-water mark (the client
    # reads slower than the gateway writes; every write then waits in drain) and resume_writing when
    # it drained. Paused for write_timeout_s: the client is taken for gone, the connection aborted,
    # so the handler is cancelled and the upstream request closed (one place for every answer,
    # streamed or not; no cost on the path of a client that reads).
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self._loop.call_later(self._guard.write_timeout, self._write_expired)

    def resume_writing(self) -> None:
        self._write_unblocked()
        super().resume_writing()

    def _write_unblocked(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _write_expired(self) -> None:
        self._write_deadline = None
        self._guard.count("write_timeout")
        self._guard.log.warning("client_timeout", kind="write_timeout", peer=_peer(self.transport))
        if self.transport is not None:
            self.transport.abort()  # not close(): that would wait for the buffer to drain

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._force_close or self._close:
            return
        if self._request_count > before:  # a request's headers are complete
            self._unanswered += self._request_count - before
            self._guard.idle.pop(self, None)
            self._disarm()
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._body = payload
                self._arm("body_timeout", self._guard.body_timeout)
            else:
                self._body = None
            return
        if self._body is not None:
            if self._body.is_eof():
                self._body = None
                self._disarm()
            return
        if data and self._deadline is None and not self._unanswered:
            self._arm("header_timeout", self._guard.header_timeout)  # the first bytes of a next request

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._unanswered = max(0, self._unanswered - 1)
            if self._admitted and not self._unanswered and not self._force_close:
                self._guard.idle[self] = None  # waiting for the next request: may be evicted

    # ---- half-close ----------------------------------------------------------------------------
    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's contract
        """The client shut down its sending side. Answer the request(s) it sent in full, then close;
        with nothing to answer, or a body cut short, close now."""
        if self._unanswered and (self._body is None or self._body.is_eof()):
            self.close()  # no keep-alive: the connection closes once the answer is written
            # A half-close and a client that went away look the same (a FIN) until we write. Answers
            # ready within the grace go out; a request still running after it is taken for a
            # disconnect, so its handler is cancelled and the engine frees the slot.
            asyncio.get_running_loop().call_later(self._guard.half_close_grace, self._peer_gone)
            return True  # keep the transport open for writing
        return None

    def _peer_gone(self) -> None:
        if self._unanswered and self.transport is not None:
            self.transport.abort()  # connection_lost: aiohttp cancels the running handler

    # ---- requests the parser refused, and handler crashes ----------------------------------------
    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            self._guard.log.error("request_handler_error", status=status, exc_info=exc)
            text, kind, code = (
                "The server had an error while processing your request.",
                "server_error",
                "internal_error",
            )
        else:
            reason = _reason(exc.message if isinstance(exc, HttpProcessingError) else (message or ""))
            self._guard.log.warning(
                "bad_http_request", status=status, reason=reason, exc_type=type(exc).__name__ if exc else None
            )
            text, kind, code = f"Malformed HTTP request: {reason}.", "invalid_request_error", "bad_http_request"
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = web.Response(status=status, body=error_body(text, kind, code), content_type="application/json")
        resp.force_close()
        return resp


def _reason(message: object) -> str:
    """The parser's reason without the bytes it quotes: its first line, up to the first colon or
    quote ("Invalid header value char", "Got more than 8190 bytes when reading")."""
    text = str(message).split("\n", 1)[0]
    for stop in (":", "'", '"'):
        text = text.split(stop, 1)[0]
    return one_line(redact(text).strip(), 80) or "malformed request"


def _peer(transport: Any) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None


class GuardedServer(Server):
    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedHandlers."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer
        server.guard = self.guard  # type: ignore[attr-defined]
        return server
