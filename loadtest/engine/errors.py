"""Error answers in the imitated server's shape.

Self-hosted profiles answer like current vLLM (ErrorResponse / ErrorInfo in
vllm/entrypoints/openai/engine/protocol.py):
    {"error": {"message": ..., "type": "BadRequestError", "param": null, "code": 400}}
The remote profile answers like OpenAI:
    {"error": {"message": ..., "type": "invalid_request_error", "param": null, "code": "..."}}
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

_VLLM_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    408: "TimeoutError",
    413: "BadRequestError",
    422: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    501: "NotImplementedError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_OPENAI_TYPES = {429: "requests", 500: "server_error", 502: "server_error", 503: "server_error"}


def default_message(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


def error_body(
    remote: bool,
    status: int,
    message: str | None = None,
    *,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    message = message if message is not None else default_message(status)
    err: dict[str, Any]
    if remote:
        err = {
            "message": message,
            "type": type_ or _OPENAI_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    else:
        err = {
            "message": message,
            "type": type_ or _VLLM_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError"),
            "param": param,
            "code": status,
        }
    return orjson.dumps({"error": err})


def error_response(
    remote: bool,
    status: int,
    message: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **kw: str | None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(remote, status, message, **kw),
        content_type="application/json",
        headers=headers,
    )


class RequestError(Exception):
    """A 4xx answer raised while validating a request."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self, remote: bool) -> web.Response:
        if remote:
            return error_response(True, self.status, self.message, param=self.param, code=self.code)
        return error_response(False, self.status, self.message, param=self.param)
