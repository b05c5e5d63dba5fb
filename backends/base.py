"""What a backend can do: open a request upstream and hand back an `Upstream` response.

`Upstream` is the one shape the dispatcher and the forwarders see, whether the bytes come straight
from an OpenAI-compatible engine or are translated from another provider's wire format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, AsyncIterator, Mapping

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
        self.active = 0  # in-flight requests on this backend, all its deployments together
        self.healthy = True  # until the first probe says otherwise
        self.load_signal: LoadSignal | None = None  # set by the load scraper (backends/load_signals.py)

    @abstractmethod
    async def open(self, path: str, body: bytes, request_id: str, ttfb_s: float | None = None) -> Upstream:
        """POST `body` to `path` (e.g. "/chat/completions") and return once headers arrived.

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
