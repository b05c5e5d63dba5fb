"""Connections from clients that misbehave, on real loopback sockets: unfinished headers and bodies
are closed after their timeouts, idle keep-alive connections too, the number of open client
connections is capped (a normal client is still served while a flood of unfinished headers holds
the cap), and a client that half-closes after a full request still gets its answer."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from openai import AsyncOpenAI

from tests.conftest import KEY_ALL, gateway_config, sdk
from tests.hostile.raw import read_response, request

CHAT = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
AUTH = {"Authorization": f"Bearer {KEY_ALL}", "Content-Type": "application/json"}


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails after `seconds`."""
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), seconds)
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def metric(gw, name: str) -> float:
    from tests.hostile.raw import send

    page = (await send(gw.port, request("GET", "/metrics"))).body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


@pytest.fixture
async def gw(gateway_factory, engine_factory):
    return await gateway_factory(
        gateway_config(
            [await engine_factory()],
            header_timeout_s=0.5,
            body_timeout_s=0.5,
            keepalive_timeout_s=0.8,
            max_connections=20,
        )
    )


@pytest.mark.parametrize(
    "method,path,body",
    [("GET", "/health/live", b""), ("GET", "/v1/models", b""), ("POST", "/v1/chat/completions", CHAT)],
)
async def test_a_half_closed_client_gets_its_answer(gw, method, path, body) -> None:
    for keep_alive in (True, False):
        reader, writer = await connect(gw.port)
        writer.write(request(method, path, AUTH, body, close=not keep_alive))
        await writer.drain()
        writer.write_eof()  # shutdown(SHUT_WR): nothing more will come
        resp = await read_response(reader)
        assert resp.status == 200, resp.body
        assert await closed_within(reader, 2) < 2  # and then the server closes its side
        writer.close()


async def test_an_unfinished_header_is_closed_after_the_header_timeout(gw) -> None:
    reader, writer = await connect(gw.port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert 0.3 < await closed_within(reader, 3) < 2
    reader, writer = await connect(gw.port)  # a connection that sends nothing at all
    assert await closed_within(reader, 3) < 2
    reader, writer = await connect(gw.port)  # a slow trickle does not extend the deadline
    t0 = time.monotonic()
    with pytest.raises((ConnectionError, OSError)):
        for ch in b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40:
            writer.write(bytes([ch]))
            await writer.drain()
            await asyncio.sleep(0.05)
            if reader.at_eof() or time.monotonic() - t0 > 3:
                raise ConnectionError
    assert time.monotonic() - t0 < 2.5
    assert await metric(gw, 'switchyard_client_connections_closed_total{reason="header_timeout"}') >= 3


async def test_an_unfinished_body_is_closed_after_the_body_timeout(gw) -> None:
    reader, writer = await connect(gw.port)
    head = request("POST", "/v1/chat/completions", AUTH, CHAT, close=False)
    writer.write(head[: len(head) - len(CHAT) + 10])  # headers and 10 bytes of the body
    assert 0.3 < await closed_within(reader, 3) < 2
    assert await metric(gw, 'switchyard_client_connections_closed_total{reason="body_timeout"}') >= 1


async def test_an_idle_keep_alive_connection_is_closed(gw) -> None:
    reader, writer = await connect(gw.port)
    writer.write(request("GET", "/health/live", close=False))
    assert (await read_response(reader)).status == 200
    assert 0.5 < await closed_within(reader, 3) < 2


async def test_the_connection_cap_holds_and_a_normal_client_is_served(gw) -> None:
    flood = []
    for _ in range(60):  # three times the cap, each with an unfinished header
        reader, writer = await connect(gw.port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        flood.append((reader, writer))
    await asyncio.sleep(0.1)
    assert await metric(gw, "switchyard_client_connections ") <= 20
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY_ALL, max_retries=0) as client:
        out = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert out.choices
    assert await metric(gw, 'switchyard_client_connections_closed_total{reason="evicted"}') >= 40
    for _, w in flood:
        w.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(gateway_factory, engine_factory) -> None:
    gw = await gateway_factory(gateway_config([await engine_factory()], max_connections=3, body_timeout_s=30))
    busy = []
    head = request("POST", "/v1/chat/completions", AUTH, CHAT, close=False)
    for _ in range(3):  # headers complete, body still coming: a request in progress
        reader, writer = await connect(gw.port)
        writer.write(head[: len(head) - 5])
        busy.append((reader, writer))
    await asyncio.sleep(0.2)
    reader, writer = await connect(gw.port)
    writer.write(request("GET", "/health/live"))
    resp = await read_response(reader)
    assert resp.status == 503 and resp.json()["error"]["code"] == "too_many_connections"
    assert resp.headers.get("retry-after")
    for r, w in busy:  # the busy ones finish normally
        w.write(head[len(head) - 5 :])
        assert (await read_response(r)).status == 200
        w.close()
    assert (await sdk(gw).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])).choices


def test_the_cap_fits_the_open_files_limit(monkeypatch) -> None:
    """The cap leaves room for one upstream connection per client connection plus a reserve; the
    soft limit is raised toward the hard one first."""
    import resource

    from gateway import httpguard

    limits = {"soft": 1024, "hard": 1024}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))

    def setrlimit(_, value):
        limits["soft"] = value[0]

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert httpguard.effective_cap(4096) == ((1024 - httpguard.FD_RESERVE) // 2, 1024)
    limits.update(soft=1024, hard=1 << 20)
    assert httpguard.effective_cap(4096) == (4096, 2 * 4096 + httpguard.FD_RESERVE)


async def test_a_client_that_never_reads_its_stream_frees_the_engine(gateway_factory, fake_upstream) -> None:
    """A client that sends a streamed request and then reads nothing: once the gateway's send buffer
    stays full for write_timeout_s, the connection is closed and the upstream request cancelled, so
    the engine's slot is freed (before: held for as long as the client kept its socket open)."""
    import socket

    from aiohttp import web

    from tests.e2e.test_faulty_upstreams import config

    cut = asyncio.Event()
    chunk = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 16000}}]}) + b"\n\n"

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while True:  # an answer that never ends, 1.6 MB/s
                await resp.write(chunk)
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            cut.set()
            raise

    url = await fake_upstream(endless)
    gw = await gateway_factory(config([url], server={"host": "127.0.0.1", "port": 0, "write_timeout_s": 0.5}))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the gateway's buffer fills
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    writer.write(request("POST", "/v1/chat/completions", AUTH, body, close=False))
    await writer.drain()
    await asyncio.wait_for(cut.wait(), 10)  # the engine saw the gateway hang up
    deployment = gw.gateway.router.get("chat").deployments[0]
    for _ in range(100):
        if not deployment.active:
            break
        await asyncio.sleep(0.02)
    assert deployment.active == 0
    assert await metric(gw, 'switchyard_client_connections_closed_total{reason="write_timeout"}') == 1
    writer.close()
