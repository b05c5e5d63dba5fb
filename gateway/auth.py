"""Phase 1, authenticate: `Authorization: Bearer sk-...` or `x-api-key` -> Principal, or 401."""

from __future__ import annotations

from typing import Mapping

from gateway.errors import unauthorized
from gateway.keys import KeyTable, Principal


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def authenticate(headers: Mapping[str, str], keys: KeyTable) -> Principal:
    key = presented_key(headers)
    if key is None:
        raise unauthorized("Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`.")
    principal = keys.lookup(key)
    if principal is None:
        raise unauthorized("Invalid API key.")
    return principal
