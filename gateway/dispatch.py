"""Phases 6-7, choose and send: pick a deployment, send the request, hand the answer to forward.

The request body is forwarded as received unless the upstream needs it changed: the upstream model
name differs from the alias, or the gateway must ask for stream usage. Then the parsed payload is
serialized once (orjson) with those fields set; nothing else is touched.

The deployment's in-flight count rises before the upstream call and drops only when the response
body has ended (or failed), in a `finally`, so least-active sees streams that are still running.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from backends.base import Upstream, UpstreamConnectError, UpstreamTimeout
from backends.deployment import Deployment
from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_gateway, gateway_timeout
from gateway.forward import forward_body, forward_stream
from gateway.request import ENDPOINTS
from gateway.runtime import Gateway

# Upstream statuses that mean the gateway's own setup is wrong (its key, its model name), not the
# client's request: answered as 502 so the client is not told its own key is bad.
_GATEWAY_SIDE = {401: "rejected the gateway's credentials", 403: "refused the gateway's credentials",
                 404: "does not serve this model or path"}
_PASS_HEADERS = ("Retry-After",)


def upstream_body(ctx: RequestContext, deployment: Deployment) -> tuple[bytes, bool]:
    """The bytes to send upstream, and whether the gateway added the stream usage request."""
    inject_usage = ctx.stream and not ctx.client_wants_usage and deployment.backend.config.stream_usage
    if deployment.upstream_model == ctx.model and not inject_usage:
        return ctx.body, False
    payload = dict(ctx.payload)
    payload["model"] = deployment.upstream_model
    if inject_usage:
        options = payload.get("stream_options")
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload), inject_usage


async def dispatch(request: web.Request, ctx: RequestContext, gw: Gateway) -> web.StreamResponse:
    assert ctx.route is not None
    deployment = ctx.route.choose(ctx)
    ctx.deployment = deployment
    ctx.attempts += 1
    ctx.response_headers["x-switchyard-deployment"] = deployment.name
    body, injected = upstream_body(ctx, deployment)
    in_flight = gw.metrics.in_flight_for(deployment.name)
    deployment.acquire()
    in_flight.inc()
    ctx.route.policy.on_start(deployment, ctx)
    try:
        upstream = await _open(gw, deployment, ctx, body)
        if upstream.status >= 400:
            return await _upstream_error(ctx, upstream, deployment, gw)
        if ctx.stream and upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            return await forward_stream(request, ctx, upstream, injected)
        return await forward_body(ctx, upstream)
    finally:
        deployment.release()
        in_flight.dec()
        ctx.route.policy.on_finish(deployment, ctx)
        if ctx.error_type == "broken_stream":
            gw.metrics.upstream_error(deployment.name, "broken_stream")


async def _open(gw: Gateway, deployment: Deployment, ctx: RequestContext, body: bytes) -> Upstream:
    path = ENDPOINTS[ctx.endpoint][0]
    try:
        return await deployment.backend.open(path, body, ctx.request_id)
    except UpstreamTimeout as e:
        gw.metrics.upstream_error(deployment.name, "timeout")
        raise gateway_timeout(str(e)) from None
    except UpstreamConnectError as e:
        gw.metrics.upstream_error(deployment.name, "connect")
        raise bad_gateway(str(e)) from None


async def _upstream_error(ctx: RequestContext, upstream: Upstream, deployment: Deployment, gw: Gateway) -> web.Response:
    """An upstream error status: the client's own mistakes (400, 422, 429 ...) pass through as the
    upstream worded them; credential or model-name problems on the gateway's side become 502."""
    if upstream.status >= 500:
        gw.metrics.upstream_error(deployment.name, "status")
    if upstream.status in _GATEWAY_SIDE:
        await upstream.read()
        upstream.release()
        raise GatewayError(
            502, f"Backend `{deployment.backend.name}` {_GATEWAY_SIDE[upstream.status]} (upstream status {upstream.status}).",
            type="upstream_error", code="upstream_misconfigured",
        )
    for name in _PASS_HEADERS:
        if name in upstream.headers:
            ctx.response_headers[name] = upstream.headers[name]
    ctx.error_type = f"upstream_{upstream.status}"
    return await forward_body(ctx, upstream)
