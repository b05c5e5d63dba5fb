"""The extension point for pipeline phases that sit between routing and dispatch (rate limits,
budgets, caches ...). Each phase sees the RequestContext before the upstream call and again once the
request is over, in reverse order, like middleware:

    on_request(ctx) -> None to go on, or a response to answer with at once (a cache hit), or raise
                       GatewayError to refuse (a limit);
    on_complete(ctx) -> settle (refund, store, record). Called for every phase whose on_request ran,
                        whatever happened after it, and only AFTER the answer's last byte went to the
                        client: settling never delays the client, and the logged latency is what the
                        client saw.

Optional, each called once by Gateway.start / Gateway.stop (in PHASE_FACTORIES order to start,
reverse to stop): `async start()`, `async close()`.

Seeing the answer as it flows: a phase that needs it attaches a ResponseTap to the request in
on_request (`ctx.taps.append(tap)`); the forwarders (gateway/forward.py) call it for every piece of
the answer sent to the client. Requests with no tap pay nothing. A tap keeps its own per-request
state (the phase finds it again in on_complete through `ctx.phase_state[phase.name]`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gateway.context import RequestContext
from gateway.tracing import tracing_phase

if TYPE_CHECKING:
    from gateway.runtime import Gateway


@dataclass(slots=True, frozen=True)
class Cut:
    """A tap's verdict: end the stream after `keep` of the events just offered, with an SSE error
    event (`message`, `code`) in their place; the upstream is closed."""

    keep: int
    message: str
    code: str


class ResponseTap(Protocol):
    def on_events(self, data: bytes, count: int) -> Cut | None:
        """A streamed answer: `data` holds `count` (>= 1) complete SSE events, exactly as they are
        about to be written to the client. Return a Cut to end the stream here."""
        ...

    def on_body(self, body: bytes) -> None:
        """A non-streamed answer: its whole body, as sent."""
        ...


class Phase(Protocol):
    name: str

    async def on_request(self, ctx: RequestContext) -> web.StreamResponse | None: ...

    async def on_complete(self, ctx: RequestContext) -> None: ...


def _cache_phase(gateway: "Gateway") -> Phase | None:
    from gateway.cache.phase import build_cache_phase  # lazy: numpy, and torch only when semantic is on

    return build_cache_phase(gateway)


# Phases in the order they run (on_complete runs in reverse). Each entry builds a phase from the
# Gateway, or returns None when its feature is not configured. Admission (rate limits, budgets)
# comes before caches, so a cache hit still counts toward request limits.
PHASE_FACTORIES: list[Callable[["Gateway"], Phase | None]] = [
    tracing_phase,  # first, so its on_complete sees the request fully settled (gateway/tracing.py)
    lambda gw: gw.limits,  # gateway/limits/: rate limits, budgets (built in Gateway.__init__)
    _cache_phase,
]


def build_phases(gateway: "Gateway") -> list[Phase]:
    phases = [factory(gateway) for factory in PHASE_FACTORIES]
    return [p for p in phases if p is not None]
