"""Keys: generated once, stored as SHA-256, looked up by hash; the CLI prints a pasteable block."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib

import pytest

from gateway.auth import authenticate, presented_key
from gateway.errors import GatewayError
from gateway.keys import KeyTable, Principal, hash_key, new_key


def test_hash_is_plain_sha256_hex() -> None:
    assert hash_key("test") == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_new_keys_are_unique_and_long() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(k.startswith("sk-") and len(k) > 40 for k in keys)


def test_table_finds_by_hash_only() -> None:
    p = Principal("agents", "research", frozenset({"m"}))
    table = KeyTable({hash_key("sk-right"): p})
    assert table.lookup("sk-right") is p
    assert table.lookup("sk-righ") is None and table.lookup("sk-right ") is None


def test_bearer_and_x_api_key_headers() -> None:
    assert presented_key({"Authorization": "Bearer sk-a"}) == "sk-a"
    assert presented_key({"x-api-key": "sk-b"}) == "sk-b"
    assert presented_key({"Authorization": "Basic abc"}) is None
    table = KeyTable({hash_key("sk-a"): Principal("k", "t", frozenset({"*"}))})
    with pytest.raises(GatewayError) as e:
        authenticate({}, table)
    assert e.value.status == 401


def test_keys_new_cli_prints_key_once_and_its_hash_block() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "new", "--team", "research"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    key = re.search(r"(sk-sy-\S+)", out).group(1)
    block = tomllib.loads(out[out.index("[[keys]]") :])["keys"][0]
    assert block["team"] == "research"
    assert block["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert out.count(key) == 1  # the key itself is printed once, the config holds only the hash
