"""Compressed request bodies: gzip and deflate are inflated with the size limit applied to the
inflated bytes (a small body that inflates to 1 GiB is a quick 413 and stalls no one), a body that
claims gzip but is not is a 400, other encodings a 415."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib

import orjson
import pytest

from tests.conftest import KEY_ALL, gateway_config
from tests.hostile.raw import request, send

CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
AUTH = {"Authorization": f"Bearer {KEY_ALL}", "Content-Type": "application/json"}


@pytest.fixture
async def gw(gateway_factory, engine_factory):
    return await gateway_factory(gateway_config([await engine_factory()]))


async def post(gw, body: bytes, encoding: str | None):
    headers = dict(AUTH)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return await send(gw.port, request("POST", "/v1/chat/completions", headers, body), timeout=20)


@pytest.mark.parametrize(
    "encoding,body",
    [
        ("gzip", gzip.compress(CHAT, mtime=0)),
        ("GZip", gzip.compress(CHAT, mtime=0)),
        ("x-gzip", gzip.compress(CHAT, mtime=0)),
        ("deflate", zlib.compress(CHAT)),
        ("deflate", zlib.compress(CHAT)[2:-4]),  # raw deflate, as some clients send it
        ("identity", CHAT),
    ],
)
async def test_compressed_bodies_are_served(gw, encoding, body) -> None:
    resp = await post(gw, body, encoding)
    assert resp.status == 200, resp.body


def bomb(inflated: int) -> bytes:
    """A valid gzip stream of a JSON body that inflates to `inflated` bytes: concatenated members
    (each 1 MiB of spaces, ~1 KiB compressed), cheap to build."""
    head = gzip.compress(b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "pad": "')
    member = gzip.compress(b" " * (1 << 20), 9)
    return head + member * (inflated >> 20) + gzip.compress(b'"}')


async def test_a_gzip_bomb_is_a_quick_413_and_stalls_no_one(gw) -> None:
    body = bomb(1 << 30)  # 1 GiB inflated
    assert len(body) < 2 << 20

    async def probe() -> float:
        worst = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            assert (await send(gw.port, request("GET", "/health/live"))).status == 200
            worst = max(worst, time.monotonic() - t0)
            await asyncio.sleep(0.01)
        return worst

    t0 = time.monotonic()
    resp, worst = await asyncio.gather(post(gw, body, "gzip"), probe())
    assert resp.status == 413 and resp.json()["error"]["code"] == "request_too_large"
    assert time.monotonic() - t0 < 3
    assert worst < 0.5  # other clients were answered meanwhile


@pytest.mark.parametrize(
    "encoding,body",
    [
        ("gzip", CHAT),  # claims gzip, is not
        ("gzip", gzip.compress(CHAT, mtime=0)[:-12]),  # cut short
        ("deflate", b"\x00\x01garbage"),
        ("deflate", zlib.compress(CHAT) + b"junk"),
        ("gzip", gzip.compress(CHAT, mtime=0) + b"trailing junk"),
    ],
)
async def test_a_body_that_is_not_what_it_claims_is_400(gw, encoding, body) -> None:
    resp = await post(gw, body, encoding)
    assert resp.status == 400, resp.body
    assert resp.json()["error"]["code"] == "invalid_content_encoding"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip"])
async def test_other_encodings_are_415(gw, encoding) -> None:
    resp = await post(gw, CHAT, encoding)
    assert resp.status == 415, resp.body
    assert resp.json()["error"]["code"] == "unsupported_content_encoding"
