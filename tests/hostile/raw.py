"""Raw HTTP/1.1 over loopback sockets: what a hostile or sloppy client sends, byte for byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        return orjson.loads(self.body)


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body)


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> RawResponse:
    """One response (Content-Length framed, or until the server closes)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    resp = parse_response(head)
    n = resp.headers.get("content-length")
    if n is not None:
        resp.body = await asyncio.wait_for(reader.readexactly(int(n)), timeout)
    else:
        resp.body = await asyncio.wait_for(reader.read(), timeout)
    return resp


async def send(port: int, raw: bytes, *, half_close: bool = False, timeout: float = 5.0) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await read_response(reader, timeout)
    finally:
        writer.close()


def request(
    method: str, path: str, headers: dict[str, bytes | str] | None = None, body: bytes = b"", close: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
