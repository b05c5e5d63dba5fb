"""No request path puts a key, or anything after `Bearer`, in a log line or an error body: a real
`switchyard serve` process gets headers its HTTP parser refuses (control characters), bytes that
are not UTF-8, wrong keys and oversized headers, each carrying a secret; its whole stderr is read."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.keys import hash_key
from loadtest.overhead import free_port, wait_port
from tests.hostile.raw import request, send

SECRET = "sk-sy-Sup3rSecretValue"
HEADERS = [
    {"Authorization": f"Bearer {SECRET}\x01tail".encode()},
    {"Authorization": f"Bearer {SECRET}\x7f".encode()},
    {"Authorization": f"Bearer\x00{SECRET}".encode()},
    {"x-api-key": f"{SECRET}\x02".encode()},
    {"Authorization": f"Bearer {SECRET}\xff\xfe".encode("latin-1")},
    {"x-api-key": f"{SECRET}\xc3".encode("latin-1")},
    {"Authorization": f"Bearer {SECRET}-wrong"},
    {"Authorization": f"Basic {SECRET}"},
    {"Authorization": f"Bearer {SECRET}" + "A" * 9000},  # longer than aiohttp's header limit
    {"Authorization": f"Bearer {SECRET}", "X-Bad\x01Name": "v"},
]
PATHS = [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/admin/deployments"), ("GET", "/nope")]


@pytest.fixture
def served(tmp_path: Path):
    port = free_port()
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[server]\nport = {port}\nlog_format = "json"\nlog_level = "debug"\n'
        f'admin_key_sha256 = "{hash_key("sk-sy-admin-other")}"\n'
        '[[teams]]\nname = "t"\n'
        f'[[keys]]\nname = "k"\nteam = "t"\nsha256 = "{hash_key(SECRET + "-real")}"\n'
    )
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)], stdout=err, stderr=err
        )
        try:
            wait_port(port)
            yield port, log
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_no_secret_in_any_log_line_or_error_body(served) -> None:
    port, log = served

    async def run() -> list[bytes]:
        bodies = []
        for headers in HEADERS:
            for method, path in PATHS:
                raw = request(method, path, headers, b'{"model": "m", "messages": []}' if method == "POST" else b"")
                try:
                    resp = await send(port, raw)
                except (ConnectionError, asyncio.IncompleteReadError):
                    continue
                assert resp.status in (400, 401, 404, 413, 431), (headers, path, resp.status, resp.body)
                bodies.append(resp.body)
        return bodies

    bodies = asyncio.run(run())
    assert bodies
    for body in bodies:
        assert SECRET.encode() not in body and b"tail" not in body
    import time

    time.sleep(0.3)
    text = log.read_bytes()
    assert b"bad_http_request" in text  # the refusals were logged, as one line each
    assert SECRET.encode() not in text and b"Sup3r" not in text
    assert b"Traceback" not in text
