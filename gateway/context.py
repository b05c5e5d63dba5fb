"""The per-request context every pipeline phase reads and writes. No phase keeps per-request state
anywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.keys import Principal
    from gateway.routing import ModelRoute


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the upstream's prompt cache (priced apart)
    known: bool = False  # the upstream reported it (otherwise the counts are zero, not estimates)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # "chat" | "completions" | "embeddings"
    started: float  # perf_counter at arrival
    principal: "Principal | None" = None
    body: bytes = b""  # the raw request body as received
    payload: dict[str, Any] = field(default_factory=dict)  # parsed once
    model: str = ""  # the alias the client asked for
    stream: bool = False
    client_wants_usage: bool = False  # the client itself asked for stream_options.include_usage
    session_id: str | None = None
    route: "ModelRoute | None" = None
    deployment: "Deployment | None" = None
    attempts: int = 0
    status: int = 0  # HTTP status sent to the client (499 = client went away)
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    first_byte_at: float | None = None  # perf_counter when the first body byte went to the client
    finished_at: float | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # phases add headers here
    # Set by a phase that needs the answer's bytes (a cache storing it): the forwarders then keep
    # the body (non-stream) or every event sent (stream) in `response_body`.
    capture_body: bool = False
    response_body: bytes | None = None
    response_complete: bool = False  # the whole answer reached the client (stream ended with [DONE])
    cache_status: str | None = None  # "hit-exact" | "hit-semantic" | "miss" | "bypass" once a cache looked
    # Caches (gateway/cache/phase.py). On a hit, `usage` holds the tokens to CHARGE (zero unless
    # the model's cache config counts hits toward token limits), so limits and budgets reading
    # ctx.usage charge no upstream cost; `cache_saved` holds what the answer cost when it was made.
    request_headers: Any = None  # the client's request headers (x-switchyard-cache, Cache-Control)
    cache_state: Any = None  # the cache phase's own per-request state
    cache_saved: Usage | None = None
    cache_similarity: float | None = None
    limits: Any = None  # gateway/limits/: the reservation to settle (rate limits, budget)
    max_stream_events: int | None = None  # a stream is cut after this many events (budgets.cut_streams)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.started

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started
