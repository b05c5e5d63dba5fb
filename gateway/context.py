"""The per-request context every pipeline phase reads and writes. No phase keeps per-request state
anywhere else."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.deployment import Deployment
    from gateway.apis.call import ApiCall
    from gateway.keys import Principal
    from gateway.limits.estimator import TokenEstimate
    from gateway.phases import ResponseTap
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
    priority: int = 0  # the request's class rank (gateway/admission/priority.py): 0 interactive, 1 batch, 2 background
    route: "ModelRoute | None" = None
    deployment: "Deployment | None" = None
    attempts: int = 0
    # An attempt sent the request upstream (or may have: cancelled or timed out while sending), so the
    # upstream may have read the prompt (set by gateway/attempt.py; the limits settle charges it).
    upstream_reached: bool = False
    # A bound on each answer's output tokens the upstream must get (the limits phase under a hard
    # budget: its reservation); gateway/attempt.py writes it into the upstream body.
    output_cap: int | None = None
    status: int = 0  # HTTP status sent to the client (499 = client went away)
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    first_byte_at: float | None = None  # perf_counter when the first body byte went to the client
    finished_at: float | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # phases add headers here
    response_complete: bool = False  # the whole answer reached the client (stream ended with [DONE])
    request_headers: Any = None  # the client's request headers
    # Phases' own per-request state, by phase name (a phase reads only its own entry), and the taps
    # they attached to see the answer as it flows (gateway/phases.py ResponseTap).
    phase_state: dict[str, Any] = field(default_factory=dict)
    taps: "list[ResponseTap]" = field(default_factory=list)
    # The request's token estimate (prompt + output allowance), made once by whoever needs it first
    # (gateway/limits/estimator.py): limits, deployment quotas and the admission queue share it.
    estimate: "TokenEstimate | None" = None
    # Extra fields for the request's log line, added by phases (cache status, queue wait ...).
    log_fields: dict[str, Any] = field(default_factory=dict)
    # A request of another API (Responses, Anthropic Messages; gateway/apis/call.py): it runs as a
    # chat request (endpoint "chat", payload the translated chat body) and this decides, per
    # deployment, the upstream path and body and how the answer goes back. None for plain requests.
    api: "ApiCall | None" = None
    # models[].echo_alias: the alias to put in the answer's `model` field (None: as upstream sent it).
    echo_model: str | None = None
    # Only local engines may take it (a Batch API line that is not spilling over; gateway/selection.py).
    local_only: bool = False
    # A request the gateway runs itself (pipeline.run_internal: a Batch API line): its task, which the
    # admission queue may cancel to give its slot to a higher class (a preemptible class only).
    task: "asyncio.Task[Any] | None" = None

    @property
    def endpoint_name(self) -> str:
        """The endpoint the client called, for the log line and traces ("responses", "messages" ...)."""
        return self.api.name if self.api is not None else self.endpoint

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.started

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started
