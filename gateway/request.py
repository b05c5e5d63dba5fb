"""Phase 2, read: the body is read and parsed once (orjson) into the RequestContext."""

from __future__ import annotations

import zlib
from hashlib import blake2b
from typing import Any

import orjson
from aiohttp import web

from gateway import jsonshape
from gateway.context import RequestContext
from gateway.errors import GatewayError, bad_request, model_not_found, too_large

SESSION_HEADER = "x-switchyard-session"
MAX_SESSION_BYTES = 128
MAX_JSON_DEPTH = 64
MAX_MODEL_CHARS = 256

# endpoint -> (upstream path, the field a request must carry besides `model`)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "chat": ("/chat/completions", "messages"),
    "completions": ("/completions", "prompt"),
    "embeddings": ("/embeddings", "input"),
}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, inflated when it is gzip or deflate encoded: `limit` applies to the bytes as sent
    and again to the inflated bytes. aiohttp's own decompression is off (gateway/server.py): it
    inflated a whole chunk at once, before any limit, so a small body that inflates to 1 GiB froze
    every client for seconds."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        raise GatewayError(
            415,
            "Unsupported Content-Encoding; send the body as is, gzip or deflate.",
            code="unsupported_content_encoding",
        )
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    kind = ENCODINGS[encoding]
    return inflate(body, kind, limit) if kind else body


ENCODINGS = {"": None, "identity": None, "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def inflate(data: bytes, kind: str, limit: int) -> bytes:
    """Inflate at most `limit` bytes (413 past that, found after inflating limit + 1 bytes, never
    more); 400 when the data is not what it claims. gzip: every member (concatenated members are
    one stream); deflate: zlib-wrapped as the HTTP spec says, or raw as some clients send it."""
    wbits = 31 if kind == "gzip" else (15 if data[:1] == b"\x78" else -15)
    out: list[bytes] = []
    size = 0
    try:
        while True:
            d = zlib.decompressobj(wbits)
            chunk = d.decompress(data, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            out.append(chunk)
            if not d.eof:
                raise zlib.error("the compressed body ends early")
            data = d.unused_data
            if not data:
                break
            if kind != "gzip" or data[:2] != b"\x1f\x8b":
                raise zlib.error("data after the compressed body")
    except zlib.error:
        raise bad_request(
            f"The request body is not valid {kind} data (Content-Encoding: {kind}).", code="invalid_content_encoding"
        ) from None
    return b"".join(out)


def load_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body once: 400 for what is not JSON, nested deeper than `max_depth`, or has
    a duplicate key at any level (gateway/jsonshape.py)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"We could not parse the JSON body of your request: {e.msg}.") from None
    try:
        jsonshape.check(body, payload, max_depth)
    except jsonshape.TooDeep:
        raise bad_request(f"The JSON body is nested more than {max_depth} levels deep.", code="json_too_deep") from None
    except jsonshape.DuplicateKey as e:
        key = e.key[:64]
        raise bad_request(
            f"The JSON body has the key {key!r} more than once in one object.", param=key, code="duplicate_key"
        ) from None
    return payload


def load_request(body: bytes) -> dict[str, Any]:
    """An inference request's body (any API) as a JSON object with a `model` string, or 400."""
    if not body:
        raise bad_request("The request body is empty; expected a JSON object.")
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_model")
    if len(model) > MAX_MODEL_CHARS:  # no alias is this long: never echoed, logged or kept whole
        raise model_not_found(model[:64] + "...")
    return payload


def parse_into(ctx: RequestContext, body: bytes, headers: Any) -> None:
    ctx.body = body
    ctx.request_headers = headers
    payload = load_request(body)
    model = payload["model"]
    required = ENDPOINTS[ctx.endpoint][1]
    if payload.get(required) in (None, "", []):
        raise bad_request(
            f"Missing required parameter: '{required}'.", param=required, code="missing_required_parameter"
        )
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
    ctx.session_id = session_key(headers.get(SESSION_HEADER) or payload.get("user"))


def session_key(session: object) -> str | None:
    """The session id as the gateway keeps it: as sent when it is printable and at most
    MAX_SESSION_BYTES, else `h:` + a 128-bit hash of its bytes. Policies, caches and logs then never
    hold more than a short string per session, whatever a client puts in `user` (4 MB ids kept
    whole took 400 MB in 100 requests), and a header that was not UTF-8 (aiohttp hands it over as
    lone surrogates) cannot make a later encode fail."""
    if not isinstance(session, str) or not session:
        return None
    if len(session) <= MAX_SESSION_BYTES and session.isprintable() and session.isascii():
        return session
    data = session.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_SESSION_BYTES and session.isprintable():
        return session
    return "h:" + blake2b(data, digest_size=16).hexdigest()
