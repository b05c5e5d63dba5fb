"""Gateway errors in OpenAI's wire shape: {"error": {"message", "type", "param", "code"}}.

The openai SDK maps the HTTP status to its exception class (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 413/422 ..., 429 RateLimitError,
5xx InternalServerError), so the status is what matters most; `type` and `code` let a caller tell
cases apart without parsing the message.
"""

from __future__ import annotations

import orjson
from aiohttp import web


class GatewayError(Exception):
    """An error answered to the client. Never put a secret in `message`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_response(err: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(extra_headers or {})
    headers.update(err.headers)
    return web.Response(status=err.status, body=err.body(), content_type="application/json", headers=headers)


# Constructors for the cases every phase shares, so messages and codes stay consistent.
def unauthorized(message: str = "Invalid or missing API key.") -> GatewayError:
    return GatewayError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, message, type="permission_error", code="model_not_allowed")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, type="invalid_request_error", code=code, param=param)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than the limit of {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )


def unavailable(message: str, retry_after: float = 1.0) -> GatewayError:
    return GatewayError(
        503,
        message,
        type="service_unavailable",
        code="no_deployment_available",
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def bad_gateway(message: str) -> GatewayError:
    return GatewayError(502, message, type="upstream_error", code="upstream_unavailable")


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="timeout", code="upstream_timeout")
