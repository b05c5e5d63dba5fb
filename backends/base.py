"""What a backend can do: open a request upstream and hand back an `Upstream` response.

`Upstream` is the one shape the dispatcher and the forwarders see, whether the bytes come straight
from an OpenAI-compatible engine or are translated from another provider's wire format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from backends import native_apis_of
from backends.adaptive import AdaptiveLimit

# Defaults of server.max_upstream_body_bytes / max_upstream_event_bytes (gateway/config.py).
MAX_UPSTREAM_BODY_BYTES = 32 * 1024 * 1024
MAX_UPSTREAM_EVENT_BYTES = 8 * 1024 * 1024

if TYPE_CHECKING:
    from backends.load_signals import LoadSignal
    from gateway.config import BackendConfig, Timeouts


class Upstream(ABC):
    """An open upstream response: status and headers known, body not yet read."""

    status: int
    headers: Mapping[str, str]

    @abstractmethod
    async def read(self) -> bytes: ...

    @abstractmethod
    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    def close(self) -> None:
        """Drop the upstream connection now (client went away): the engine frees its slot."""

    @abstractmethod
    def release(self) -> None:
        """Body fully read: return the connection to the pool."""


class UpstreamConnectError(Exception):
    """The upstream could not be reached (refused, reset, DNS): nothing was sent or received."""


class UpstreamTooLarge(UpstreamConnectError):
    """The upstream's answer is longer than the gateway holds (`server.max_upstream_body_bytes`)."""


async def read_bounded(content: Any, length: int | None, limit: int) -> bytes:
    """A whole body from an aiohttp StreamReader, at most `limit` bytes held: UpstreamTooLarge past
    it (a declared Content-Length is refused before reading anything)."""
    if length is not None and length > limit:
        raise UpstreamTooLarge(f"the upstream answer is {length} bytes, over the {limit} the gateway holds")
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise UpstreamTooLarge(f"the upstream answer is over the {limit} bytes the gateway holds")
        parts.append(chunk)


class UpstreamTimeout(Exception):
    """The upstream did not answer in time (connect, first byte, gap between chunks, or total)."""

    def __init__(self, message: str, phase: str = "read") -> None:
        super().__init__(message)
        self.phase = phase  # "connect" | "ttfb" | "idle" | "total" | "read"


class Backend(ABC):
    def __init__(self, config: "BackendConfig", timeouts: "Timeouts", local: bool) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.local = local
        self.timeouts = timeouts
        self.ttfb_s: float = timeouts.ttfb_s or timeouts.read_s  # request sent -> first body byte
        self.idle_s: float = timeouts.idle_s or timeouts.read_s  # longest gap between stream chunks
        self.max_concurrency = config.max_concurrency
        # What the gateway holds of one answer (server.max_upstream_*_bytes, set by the Gateway).
        self.max_body_bytes = MAX_UPSTREAM_BODY_BYTES
        self.max_event_bytes = MAX_UPSTREAM_EVENT_BYTES
        # Learned from latency when configured (backends/adaptive.py): it then sets max_concurrency.
        self.adaptive: AdaptiveLimit | None = None
        if config.adaptive_concurrency is not None:
            self.adaptive = AdaptiveLimit(config.adaptive_concurrency)
            self.max_concurrency = self.adaptive.value
        self.active = 0  # in-flight requests on this backend, all its deployments together
        self.healthy = True  # until the first probe says otherwise
        self.load_signal: LoadSignal | None = None  # set by the load scraper (backends/load_signals.py)
        # When the engine's own load makes it saturated ([admission].saturation; None = only
        # max_concurrency counts). Set by the admission queue (gateway/admission/).
        self.saturation: Any = None
        # Client APIs served natively ("responses", "messages"): passed through, not translated.
        self.native_apis: frozenset[str] = native_apis_of(config.kind, config.native_apis)

    @abstractmethod
    async def open(
        self,
        path: str,
        body: bytes,
        request_id: str,
        ttfb_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Upstream:
        """POST `body` to `path` (e.g. "/chat/completions") and return once headers arrived.
        `headers`: extra request headers of this request (a native API's version / beta headers).

        `ttfb_s` (default: the backend's own) bounds the wait from sending to the first body byte:
        the headers here, and the first chunk of `iter_chunks`; later chunks are bounded by the
        idle gap. Both raise UpstreamTimeout with `phase` set."""

    @abstractmethod
    async def probe(self) -> bool:
        """Cheap liveness check used by the health prober."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
