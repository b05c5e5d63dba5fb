"""What handlers read from the aiohttp app: the current Gateway, and the request id helper.

A leaf module (no pipeline, no handlers), so any handler or middleware can import it.
"""

from __future__ import annotations

from aiohttp import web

from gateway.runtime import Gateway, GatewayRef

GATEWAY = web.AppKey("gateway", GatewayRef)


def current_gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY].current


def request_id_of(request: web.Request) -> str:
    """The client's x-request-id when it is sane (<= 128 printable ASCII chars), else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable():
        return rid
    return current_gateway(request).new_request_id()
