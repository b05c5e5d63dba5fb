"""The HTTP face: routes of the OpenAI-compatible API, health, metrics."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from gateway.admin import add_admin_routes
from gateway.api_routes import add_api_routes
from gateway.app_state import GATEWAY, current_gateway, request_id_of
from gateway.auth import authenticate
from gateway.batch.batches_api import add_batch_routes
from gateway.cors import add_cors
from gateway.errors import GatewayError, error_response, model_not_found
from gateway.limits.usage import usage_endpoint
from gateway.pipeline import handle_inference
from gateway.runtime import Gateway, GatewayRef

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _model_card(alias: str) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "switchyard"}


async def list_models(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    principal = authenticate(request.headers, gw.keys)
    data = [_model_card(a) for a in gw.router.aliases() if principal.may_use(a)]
    return _json({"object": "list", "data": data}, headers={"x-request-id": request_id_of(request)})


async def get_model(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    alias = request.match_info["model"]
    principal = authenticate(request.headers, gw.keys)
    if gw.router.get(alias) is None or not principal.may_use(alias):
        raise model_not_found(alias)
    return _json(_model_card(alias), headers={"x-request-id": request_id_of(request)})


async def live(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ok, per_model = current_gateway(request).readiness()
    return _json({"status": "ready" if ok else "not_ready", "models": per_model}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=current_gateway(request).metrics.render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
    )


async def not_found(request: web.Request) -> web.Response:
    """Catch-all route: unknown paths get 404, known paths with the wrong method 405, both as JSON
    (a route, not a middleware: middlewares cost every request a little)."""
    if any(r.get_info().get("path") == request.path for r in request.app.router.resources()):
        raise GatewayError(405, f"Method {request.method} is not allowed on {request.path}.", code="method_not_allowed")
    raise GatewayError(404, f"Unknown path: {request.method} {request.path}", code="unknown_path")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one error path: a GatewayError raised by any handler becomes the client's error answer
    (OpenAI's shape, its status and headers, the request id); anything else is a logged 500 in the
    same shape. Inference answers its own errors (it must settle the request after them), so this
    costs it one await."""
    try:
        return await handler(request)
    except GatewayError as e:
        return error_response(e, {"x-request-id": request_id_of(request)})
    except web.HTTPException:
        raise
    except ConnectionResetError as e:
        if request.transport is None or request.transport.is_closing():
            # The client went away mid-answer (a write found its connection closing): not a gateway
            # failure; the request's own log line says 499. This answer is never sent.
            return web.Response(status=499)
        return _failed(request, e)
    except Exception as e:
        return _failed(request, e)


def _failed(request: web.Request, e: Exception) -> web.Response:
    current_gateway(request).log.error(
        "handler_failed", path=request.path, exc_type=type(e).__name__, exc_message=str(e)[:500]
    )
    err = GatewayError(500, "The gateway failed to handle this request.", type="server_error", code="internal_error")
    return error_response(err, {"x-request-id": request_id_of(request)})


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.config.server.max_body_bytes, middlewares=[error_middleware])
    app[GATEWAY] = GatewayRef(gateway)
    for path, endpoint in (
        ("/v1/chat/completions", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
    ):
        app.router.add_post(path, functools.partial(handle_inference, endpoint=endpoint))
    # Other APIs (gateway/apis): run as chat requests, answered in their own shape.
    for path, api in (("/v1/responses", "responses"), ("/v1/messages", "messages")):
        app.router.add_post(path, functools.partial(handle_inference, endpoint="chat", api=api))
    add_api_routes(app)
    add_batch_routes(app)  # /v1/files, /v1/batches (gateway/batch/)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/switchyard/usage", usage_endpoint)
    add_admin_routes(app)
    add_cors(app, gateway.config.server.cors_origins)  # OPTIONS preflights, before the catch-all
    app.router.add_route("*", "/{tail:.*}", not_found)

    async def on_startup(app: web.Application) -> None:
        await app[GATEWAY].current.start()

    async def on_cleanup(app: web.Application) -> None:
        await app[GATEWAY].current.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
