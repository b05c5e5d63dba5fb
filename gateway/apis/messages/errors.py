"""Anthropic's error shape and rate-limit headers.

Body: {"type": "error", "error": {"type": ..., "message": ...}}; the type follows the status the
way the Anthropic SDK and API pair them (400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
503 / 529 overloaded_error; other 4xx invalid_request_error, other 5xx api_error). The SDK picks its
exception class by status (RateLimitError for 429 ...), so the status is kept as is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import orjson

from gateway.errors import GatewayError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_json(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


def error_body(err: GatewayError) -> tuple[bytes, dict[str, str]]:
    return error_json(err.status, err.message), anthropic_headers(err.headers)


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float | None:
    """OpenAI's x-ratelimit-reset-* style (20ms, 1.5s, 6m0s, 1h2m3s) -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None or not any(m.groups()):
        return None
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000


def anthropic_headers(headers: Mapping[str, str], now: datetime | None = None) -> dict[str, str]:
    """The gateway's headers (Retry-After, x-ratelimit-{limit,remaining,reset}-{requests,tokens}) with
    Anthropic's names added: retry-after (whole seconds) and anthropic-ratelimit-{requests,tokens}-
    {limit,remaining,reset}, reset as an RFC 3339 time. Headers it does not know pass unchanged."""
    lower = {k.lower(): v for k, v in headers.items()}
    out = {k: v for k, v in headers.items() if k.lower() != "retry-after"}
    retry = lower.get("retry-after")
    if retry is not None:
        try:
            out["retry-after"] = str(max(0, math.ceil(float(retry))))
        except ValueError:
            out["retry-after"] = retry  # an HTTP date: the SDK reads both
    when = now or datetime.now(UTC)
    for kind in ("requests", "tokens"):
        for part in ("limit", "remaining"):
            v = lower.get(f"x-ratelimit-{part}-{kind}")
            if v is not None:
                out[f"anthropic-ratelimit-{kind}-{part}"] = v
        reset = lower.get(f"x-ratelimit-reset-{kind}")
        seconds = parse_duration(reset) if reset is not None else None
        if seconds is not None:
            at = (when + timedelta(seconds=math.ceil(seconds))).replace(microsecond=0)
            out[f"anthropic-ratelimit-{kind}-reset"] = at.isoformat().replace("+00:00", "Z")
    return out
