"""API keys: generated here, stored only as SHA-256 hashes, looked up without timing leaks."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "sk-sy-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # surrogatepass: a header value that was not UTF-8 (decoded to lone surrogates) hashes to a
    # digest no real key has, rather than raising (gateway/auth.py refuses such values first).
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


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
        self._stored: dict[str, Principal] = {}  # keys created through the admin API (gateway/keystore.py)

    def lookup(self, presented: str) -> Principal | None:
        digest = hash_key(presented)
        return self._by_hash.get(digest) or self._stored.get(digest)

    def set_stored(self, entries: dict[str, Principal]) -> None:
        """Replace the admin-created keys (one assignment: a lookup sees the old or the new set)."""
        self._stored = dict(entries)

    def add_stored(self, digest: str, principal: Principal) -> None:
        self._stored = {**self._stored, digest: principal}

    def remove_stored(self, digest: str) -> None:
        self._stored = {k: v for k, v in self._stored.items() if k != digest}

    def by_name(self, name: str) -> Principal | None:
        """The principal of the active key named `name` (a Batch API job runs as the key that
        created it); None once that key is gone."""
        for table in (self._by_hash, self._stored):
            for p in table.values():
                if p.key_name == name:
                    return p
        return None

    def names(self) -> set[str]:
        """Names of the keys from the config file."""
        return {p.key_name for p in self._by_hash.values()}

    def __len__(self) -> int:
        return len(self._by_hash)
