"""Phase 2, read: the body is read and parsed once (orjson) into the RequestContext."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import bad_request, too_large

SESSION_HEADER = "x-switchyard-session"

# endpoint -> (upstream path, the field a request must carry besides `model`)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "chat": ("/chat/completions", "messages"),
    "completions": ("/completions", "prompt"),
    "embeddings": ("/embeddings", "input"),
}


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None


def parse_into(ctx: RequestContext, body: bytes, headers: Any) -> None:
    ctx.body = body
    ctx.request_headers = headers
    if not body:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"We could not parse the JSON body of your request: {e.msg}.") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_model")
    required = ENDPOINTS[ctx.endpoint][1]
    if payload.get(required) in (None, "", []):
        raise bad_request(f"Missing required parameter: '{required}'.", param=required, code="missing_required_parameter")
    if ctx.endpoint == "chat" and not isinstance(payload[required], list):
        raise bad_request("'messages' must be an array of message objects.", param="messages")
    stream = payload.get("stream", False)
    if stream not in (True, False, None):
        raise bad_request("'stream' must be a boolean.", param="stream")
    ctx.payload = payload
    ctx.model = model
    ctx.stream = bool(stream) and ctx.endpoint != "embeddings"
    options = payload.get("stream_options")
    ctx.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    session = headers.get(SESSION_HEADER) or payload.get("user")
    ctx.session_id = session if isinstance(session, str) and session else None
