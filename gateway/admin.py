"""Admin API, under /admin, for the admin key only (`server.admin_key_sha256`).

Feature modules add their own admin routes through `admin_routes` (a list of (method, path,
handler)); every admin handler runs behind `require_admin` and is logged as an audit line.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from gateway.admin_keys import create_key, list_keys, revoke_key
from gateway.app_state import current_gateway, request_id_of
from gateway.auth import presented_key
from gateway.errors import GatewayError, bad_request, error_response, unauthorized
from gateway.keys import hash_key
from gateway.reload import admin_reload
from gateway.request import load_json, read_body

if TYPE_CHECKING:
    from backends.load_signals import Load

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_admin(request: web.Request) -> None:
    expected = current_gateway(request).config.server.admin_key_sha256
    if expected is None:
        raise GatewayError(
            403,
            "The admin API is disabled: set server.admin_key_sha256.",
            type="permission_error",
            code="admin_disabled",
        )
    key = presented_key(request.headers)
    if key is None or not hmac.compare_digest(hash_key(key), expected):
        raise unauthorized("Admin key required.")


def require_admin(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        rid = request_id_of(request)
        try:
            check_admin(request)
        except GatewayError as e:
            return error_response(e, {"x-request-id": rid})
        current_gateway(request).log.info("audit", action=f"{request.method} {request.path}", request_id=rid)
        return await handler(request)

    return wrapped


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def list_deployments(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    models = []
    for route in gw.router.routes():
        models.append(
            {
                "model": route.alias,
                "policy": type(route.policy).__name__,
                "deployments": [
                    {
                        "name": d.name,
                        "backend": d.backend.name,
                        "kind": d.backend.kind,
                        "local": d.backend.local,
                        "healthy": d.backend.healthy,
                        "active": d.active,
                        "backend_active": d.backend.active,
                        "max_concurrency": d.backend.max_concurrency,
                        "weight": route.weights.get(d.name, 1.0),
                        "load": _load_row(d.load()),
                        "saturated": not d.has_capacity(),
                    }
                    for d in route.deployments
                ],
            }
        )
    queue = gw.admission.status() if gw.admission is not None else None
    return json_response({"models": models, "queue": queue})


def _load_row(load: Load) -> dict[str, object]:
    """A deployment's Load (backends/load_signals.py) for JSON: stale readings say so."""
    return {
        "waiting": load.waiting,
        "running": load.running,
        "kv_usage": load.kv_usage,
        "stale": load.stale,
        "source": load.source,
    }


async def list_breakers(request: web.Request) -> web.Response:
    """Circuit breaker, 429 cool-down and health of every deployment (gateway/resilience.py)."""
    return json_response({"deployments": current_gateway(request).resilience.status()})


async def purge_cache(request: web.Request) -> web.Response:
    """Drop cached answers: JSON body {"model", "team", "scope"}, each optional (none = all)."""
    gw = current_gateway(request)
    cache = next((p for p in gw.phases if p.name == "cache"), None)
    if cache is None:
        return error_response(GatewayError(404, "Caching is not configured ([cache]).", code="cache_disabled"))
    try:
        raw = await read_body(request, gw.config.server.max_body_bytes)
        filters = load_json(raw) if raw.strip() else {}
    except GatewayError as e:
        return error_response(e)
    allowed = {"model", "team", "scope"}
    if (
        not isinstance(filters, dict)
        or set(filters) - allowed
        or any(not isinstance(v, str) or not v for v in filters.values())
        or filters.get("scope", "global") not in ("global", "team", "key", "session")
    ):
        return error_response(
            bad_request(
                'Expected a JSON object with optional string fields "model", "team", "scope" (global|team|key|session).'
            )
        )
    purged = await cache.purge(filters.get("model"), filters.get("team"), filters.get("scope"))  # type: ignore[attr-defined]
    gw.log.info("audit", action="cache_purge", filters=filters, purged=purged)
    return json_response({"purged": purged, "filters": filters})


ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/admin/deployments", list_deployments),
    ("GET", "/admin/breakers", list_breakers),
    ("POST", "/admin/cache/purge", purge_cache),
    ("POST", "/admin/reload", admin_reload),  # gateway/reload.py
    ("POST", "/admin/keys", create_key),  # gateway/admin_keys.py
    ("GET", "/admin/keys", list_keys),
    ("DELETE", "/admin/keys/{key_id}", revoke_key),
]


def add_admin_routes(app: web.Application) -> None:
    for method, path, handler in ADMIN_ROUTES:
        app.router.add_route(method, path, require_admin(handler))
