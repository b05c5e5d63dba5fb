"""CORS for browser-based agents (`server.cors_origins`): preflights answered, answers marked.

Off unless origins are configured (then nothing is registered: no cost). With an allow-list:
- `OPTIONS` on any path with an allowed `Origin` -> 204 with Access-Control-Allow-Origin / -Methods /
  -Headers (the headers the browser asked for: Authorization, x-api-key, anthropic-version ...) and
  Max-Age; a preflight from an origin not on the list -> 403;
- every answer to an allowed origin carries Access-Control-Allow-Origin and Expose-Headers (so a
  browser agent can read x-request-id, the x-ratelimit-* headers and Retry-After).
`"*"` allows any origin (the answer names the caller's origin; no credentials are involved, the
key travels in a header).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSE = (
    "x-request-id, retry-after, x-switchyard-model, x-switchyard-deployment, x-switchyard-cache, "
    "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, "
    "anthropic-ratelimit-requests-limit, anthropic-ratelimit-requests-remaining, "
    "anthropic-ratelimit-requests-reset, anthropic-ratelimit-tokens-limit, "
    "anthropic-ratelimit-tokens-remaining, anthropic-ratelimit-tokens-reset"
)
MAX_AGE = "600"


class Cors:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.any = "*" in self.origins

    def allowed(self, origin: str | None) -> bool:
        return bool(origin) and (self.any or origin in self.origins)

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if not self.allowed(origin):
            return web.Response(status=403, text="CORS: origin not allowed")
        assert origin is not None
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        }
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS" and self.allowed(origin):
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE
            response.headers["Vary"] = "Origin"


def add_cors(app: web.Application, origins: list[str]) -> None:
    """Before the catch-all route: OPTIONS on every path is the preflight."""
    if not origins:
        return
    cors = Cors(origins)
    app.router.add_route("OPTIONS", "/{tail:.*}", cors.preflight)
    app.on_response_prepare.append(cors.on_prepare)
