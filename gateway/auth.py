"""Phase 1, authenticate: `Authorization: Bearer sk-...` or `x-api-key` -> Principal, or 401.

A presented key is only ever hashed, never logged or echoed. One that cannot be a key (bytes that
are not UTF-8, control characters, longer than MAX_KEY_CHARS) is refused as invalid before it is
hashed, so no header value can turn authentication into a 500.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import unauthorized
from gateway.keys import KeyTable, Principal

MAX_KEY_CHARS = 512
MISSING = "Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`."
INVALID = "Invalid API key."


def _sane(key: str) -> bool:
    """Printable text: aiohttp decodes header bytes that are not UTF-8 to lone surrogates, which
    are not printable, nor are control characters."""
    return len(key) <= MAX_KEY_CHARS and key.isprintable()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client presented, or None when none was. Raises 401 for a value that cannot
    be a key."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if not _sane(token):
                raise unauthorized(INVALID)
            return token
        return None
    key = headers.get("x-api-key")
    key = key.strip() if key else None
    if key and not _sane(key):
        raise unauthorized(INVALID)
    return key or None


def authenticate(headers: Mapping[str, str], keys: KeyTable) -> Principal:
    key = presented_key(headers)
    if key is None:
        raise unauthorized(MISSING)
    principal = keys.lookup(key)
    if principal is None:
        raise unauthorized(INVALID)
    return principal
