"""`/v1/files` for the Batch API: upload (multipart, purpose `batch`, checked line by line),
retrieve, content, delete, list. Files belong to the key's team; another team's id is a 404 (its
existence is not revealed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from gateway.app_state import current_gateway, request_id_of
from gateway.auth import authenticate
from gateway.batch import BatchService
from gateway.batch.objects import file_object, new_id
from gateway.batch.validate import parse, summary
from gateway.errors import GatewayError, bad_request
from gateway.keys import Principal

MAX_LIST = 10_000


def json_response(request: web.Request, data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers={"x-request-id": request_id_of(request)},
    )


def service(request: web.Request) -> tuple[BatchService, Principal]:
    """The Batch API of the current gateway and the caller (401 without a valid key, 404 when off)."""
    gw = current_gateway(request)
    principal = authenticate(request.headers, gw.keys)
    if gw.batch is None:
        raise GatewayError(404, "The Batch API is not enabled on this gateway ([batch] enabled = false).")
    return gw.batch, principal


def not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(404, f"No such {kind}: '{ident[:80]}'.", code=f"{kind}_not_found", param="id")


async def upload_file(request: web.Request) -> web.Response:
    svc, principal = service(request)
    cfg = svc.cfg
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Upload the file as multipart/form-data with fields 'purpose' and 'file'.")
    purpose, filename, content = None, "upload.jsonl", b""
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.read(decode=True)).decode("utf-8", "replace")[:64]
        elif part.name == "file":
            filename = (part.filename or filename)[:256]
            content = await _read_limited(part, cfg.max_file_bytes)
        else:
            await part.release()
    if purpose != "batch":
        raise bad_request("Only purpose 'batch' is supported by this gateway.", param="purpose", code="invalid_purpose")
    # off the event loop: 50,000 lines take a noticeable fraction of a second to check
    requests, problems = await asyncio.to_thread(parse, content, cfg.max_lines, cfg.max_line_bytes)
    if problems:
        raise bad_request(summary(problems), param="file", code="invalid_file")
    row = {
        "id": new_id("file-"),
        "team": principal.team,
        "purpose": purpose,
        "filename": filename,
        "created_at": int(time.time()),
    }
    await svc.store.put_file(row, content)
    return json_response(request, file_object({**row, "bytes": len(content)}))


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            raise GatewayError(
                413, f"The file is larger than the limit of {limit} bytes.", code="file_too_large", param="file"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def get_file(request: web.Request) -> web.Response:
    svc, principal = service(request)
    fid = request.match_info["id"]
    row = await svc.store.get_file(principal.team, fid)
    if row is None:
        raise not_found("file", fid)
    return json_response(request, file_object(row))


async def file_content(request: web.Request) -> web.Response:
    svc, principal = service(request)
    fid = request.match_info["id"]
    content = await svc.store.file_content(principal.team, fid)
    if content is None:
        raise not_found("file", fid)
    return web.Response(
        body=content, content_type="application/octet-stream", headers={"x-request-id": request_id_of(request)}
    )


async def delete_file(request: web.Request) -> web.Response:
    svc, principal = service(request)
    fid = request.match_info["id"]
    if not await svc.store.delete_file(principal.team, fid):
        raise not_found("file", fid)
    return json_response(request, {"id": fid, "object": "file", "deleted": True})


async def list_files(request: web.Request) -> web.Response:
    svc, principal = service(request)
    q = request.query
    limit = _int(q.get("limit"), 10_000, 1, MAX_LIST, "limit")
    rows = await svc.store.list_files(principal.team, q.get("purpose"), q.get("after"), limit + 1)
    return json_response(request, page([file_object(r) for r in rows], limit))


def page(data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A cursor page (newest first); `after` = last_id fetches the next."""
    more = len(data) > limit
    data = data[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _int(raw: str | None, default: int, low: int, high: int, name: str) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be an integer from {low} to {high}.", param=name)
    return value


def add_file_routes(app: web.Application) -> None:
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{id}", get_file)
    app.router.add_delete("/v1/files/{id}", delete_file)
    app.router.add_get("/v1/files/{id}/content", file_content)
