"""API keys: generated here, stored only as SHA-256 hashes, looked up without timing leaks."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "sk-sy-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name (never the key), its team, and what it may use."""

    key_name: str
    team: str
    models: frozenset[str]  # allowed aliases; "*" = all

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class KeyTable:
    """Maps a presented key to its Principal.

    The presented key is hashed first and the table is indexed by that hash, so the time a lookup
    takes depends only on the SHA-256 of what was presented, never on how many leading characters
    of a real key the caller guessed: byte-by-byte comparison of secrets never happens.
    """

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_hash = dict(entries)

    def lookup(self, presented: str) -> Principal | None:
        return self._by_hash.get(hash_key(presented))

    def __len__(self) -> int:
        return len(self._by_hash)
