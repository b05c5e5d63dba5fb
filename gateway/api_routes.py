"""The HTTP face of the other APIs (gateway/apis): the parse step of the pipeline for
`POST /v1/responses` and `POST /v1/messages`, and the endpoints that do not run the pipeline:

    GET    /v1/responses/{id}          the stored response (this key's own; 404 otherwise)
    DELETE /v1/responses/{id}          forget it
    POST   /v1/responses/{id}/cancel   400: only background responses can be cancelled, and the
                                       gateway runs none (404 for an unknown id)
    POST   /v1/messages/count_tokens   the gateway's estimate of the request's input tokens

Errors of the Messages endpoints are in Anthropic's shape; the Responses ones in OpenAI's (the
error middleware's).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import Counter

from gateway.api_forward import api_error
from gateway.apis import owner_of
from gateway.apis.call import ApiCall
from gateway.app_state import current_gateway, request_id_of
from gateway.auth import authenticate
from gateway.context import RequestContext
from gateway.errors import GatewayError, forbidden, model_not_found
from gateway.metrics import Metrics
from gateway.request import load_request, read_body
from gateway.runtime import Gateway
from policies.session_affinity import session_of


async def begin(ctx: RequestContext, gw: Gateway, name: str, body: bytes, headers: Any) -> None:
    """The read step for another API: parse and translate the request into ctx (as a chat request)."""
    ctx.body, ctx.request_headers = body, headers
    payload = load_request(body)
    adapter = gw.apis[name]
    p = ctx.principal
    assert p is not None
    owner = owner_of(p.team, p.key_name)
    tr = await adapter.parse(payload, headers, owner, native_ok=payload["model"] in gw.native_aliases[name])  # type: ignore[call-arg]
    ctx.api = ApiCall(adapter, tr, payload, body, owner, headers)
    ctx.payload, ctx.model, ctx.stream = tr.chat_payload, tr.model, tr.stream
    ctx.client_wants_usage = tr.stream  # the translated request asks for the usage chunk itself
    ctx.session_id = session_of(headers, payload)


class ApiMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.requests = Counter(
            "switchyard_api_requests",
            "Requests of the Responses / Messages APIs, by api and mode (translated | native | cache | "
            "none: answered before any upstream, e.g. an error).",
            ["api", "mode"],
            registry=metrics.registry,
        )


def observe(gw: Gateway, ctx: RequestContext) -> None:
    call = ctx.api
    if call is None:
        return
    if ctx.deployment is not None:
        mode = "native" if call.native(ctx.deployment) else "translated"
    else:
        mode = "cache" if str(ctx.log_fields.get("cache", "")).startswith("hit") else "none"
    m = gw.metrics.extension("apis", ApiMetrics)
    m.m._child(m.requests, call.name, mode).inc()
    ctx.log_fields["api_mode"] = mode


# ---------------------------------------------------------------- endpoints outside the pipeline
def _owner(request: web.Request, gw: Gateway) -> str:
    p = authenticate(request.headers, gw.keys)
    return owner_of(p.team, p.key_name)


def _json(body: bytes, request: web.Request, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=body, content_type="application/json", headers={"x-request-id": request_id_of(request)}
    )


async def get_response(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    body = await gw.apis["responses"].get(request.match_info["id"], _owner(request, gw))  # type: ignore[attr-defined]
    return _json(body, request)


async def delete_response(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    body = await gw.apis["responses"].delete(request.match_info["id"], _owner(request, gw))  # type: ignore[attr-defined]
    return _json(body, request)


async def cancel_response(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    resp_id = request.match_info["id"]
    await gw.apis["responses"].get(resp_id, _owner(request, gw))  # type: ignore[attr-defined]  # 404 if unknown
    raise GatewayError(
        400,
        "Only responses created with background=true can be cancelled; this gateway runs no background responses.",
        type="invalid_request_error",
        code="response_not_cancellable",
        param="response_id",
    )


async def count_tokens(request: web.Request) -> web.Response:
    gw = current_gateway(request)
    adapter = gw.apis["messages"]
    ctx = RequestContext(request_id=request_id_of(request), endpoint="chat", started=0.0)
    ctx.response_headers["x-request-id"] = ctx.request_id
    try:
        principal = authenticate(request.headers, gw.keys)
        payload = load_request(await read_body(request, gw.config.server.max_body_bytes))
        model = payload["model"]
        if gw.router.get(model) is None:
            raise model_not_found(model)
        if not principal.may_use(model):
            raise forbidden(f"This API key may not use model `{model}`.")
        if not gw.estimator.counters:  # no limits phase loaded tiktoken: load it now, once
            await gw.estimator.start([model])
        body = adapter.count_tokens(payload)  # type: ignore[attr-defined]
    except GatewayError as e:
        return api_error(ctx, adapter, e)
    return _json(body, request)


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/v1/responses/{id}", get_response)
    app.router.add_delete("/v1/responses/{id}", delete_response)
    app.router.add_post("/v1/responses/{id}/cancel", cancel_response)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
