"""`/v1/batches`: create, retrieve, list, cancel. A batch belongs to the key's team (it runs as the
key that created it); another team's id is a 404.

Creating a batch checks every line of its input file against it (endpoint, one model, a model the
key may use). Any problem: the batch is created `failed` with `errors.data[{code, message, line,
param}]`, as OpenAI does; otherwise it is `in_progress` at once and the runner takes it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.app_state import current_gateway
from gateway.batch import BatchService
from gateway.batch.files_api import _int, add_file_routes, json_response, not_found, page, service
from gateway.batch.objects import batch_object, new_id
from gateway.batch.store import Line
from gateway.batch.validate import ENDPOINTS, check_against, parse
from gateway.errors import GatewayError, bad_request
from gateway.request import load_json, read_body


async def create_batch(request: web.Request) -> web.Response:
    svc, principal = service(request)
    gw = current_gateway(request)
    body = load_json(await read_body(request, gw.config.server.max_body_bytes))
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    endpoint, window, file_id = body.get("endpoint"), body.get("completion_window"), body.get("input_file_id")
    if endpoint not in ENDPOINTS:
        raise bad_request(
            f"'endpoint' must be one of {', '.join(ENDPOINTS)}.", param="endpoint", code="invalid_endpoint"
        )
    if window not in svc.cfg.completion_windows:
        raise bad_request(
            f"'completion_window' must be one of {', '.join(svc.cfg.completion_windows)}.",
            param="completion_window",
            code="invalid_completion_window",
        )
    if not isinstance(file_id, str) or not file_id:
        raise bad_request("Missing required parameter: 'input_file_id'.", param="input_file_id")
    metadata = _metadata(body.get("metadata"))
    meta = await svc.store.get_file(principal.team, file_id)
    content = await svc.store.file_content(principal.team, file_id) if meta is not None else None
    if meta is None or content is None:
        raise not_found("file", file_id)
    if meta["purpose"] != "batch":
        raise bad_request("The input file must have purpose 'batch'.", param="input_file_id", code="invalid_file")
    requests, problems = await asyncio.to_thread(parse, content, svc.cfg.max_lines, svc.cfg.max_line_bytes)
    if not problems:
        problems = check_against(requests, endpoint, lambda m: gw.router.get(m) is not None, principal.may_use)
    now = int(time.time())
    bid = new_id("batch_")
    row: dict[str, Any] = {
        "id": bid,
        "team": principal.team,
        "key_name": principal.key_name,
        "created_at": now,
        "expires_at": now + int(svc.cfg.completion_windows[window]),
        "model": requests[0].model if requests else "",
        "obj": {"endpoint": endpoint, "input_file_id": file_id, "completion_window": window, "metadata": metadata},
    }
    lines: list[Line] = []
    if problems:
        row.update(status="failed", failed_at=now)
        row["obj"]["errors"] = {"object": "list", "data": [p.to_json() for p in problems]}
    else:
        row.update(status="in_progress", in_progress_at=now)
        lines = [Line(bid, i, r.custom_id, r.grp, r.body) for i, r in enumerate(requests)]
    await svc.store.create_batch(row, lines)
    svc.runner.wake()
    stored = await svc.store.get_batch(bid)
    assert stored is not None
    return json_response(request, batch_object(stored))


def _metadata(raw: object) -> dict[str, str] | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or len(raw) > 16
        or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in raw.items())
    ):
        raise bad_request(
            "'metadata' must be at most 16 string keys (<= 64 chars) with string values (<= 512 chars).",
            param="metadata",
        )
    return raw


async def _own_batch(svc: BatchService, team: str, bid: str) -> dict[str, Any]:
    """The team's batch `bid`; 404 when it does not exist or belongs to another team."""
    row = await svc.store.get_batch(bid, team)
    if row is None:
        raise not_found("batch", bid)
    return row


async def get_batch(request: web.Request) -> web.Response:
    svc, principal = service(request)
    return json_response(request, batch_object(await _own_batch(svc, principal.team, request.match_info["id"])))


async def list_batches(request: web.Request) -> web.Response:
    svc, principal = service(request)
    limit = _int(request.query.get("limit"), 20, 1, 100, "limit")
    rows = await svc.store.list_batches(principal.team, request.query.get("after"), limit + 1)
    return json_response(request, page([batch_object(r) for r in rows], limit))


async def cancel_batch(request: web.Request) -> web.Response:
    svc, principal = service(request)
    bid = request.match_info["id"]
    row = await _own_batch(svc, principal.team, bid)
    if row["status"] not in ("cancelling", "cancelled"):
        if not await svc.store.set_status(bid, "cancelling", ("validating", "in_progress")):
            raise GatewayError(
                409,
                f"The batch is {row['status']}; only a batch in progress can be cancelled.",
                code="batch_not_cancellable",
            )
        svc.runner.wake()
    return json_response(request, batch_object(await _own_batch(svc, principal.team, bid)))


def add_batch_routes(app: web.Application) -> None:
    add_file_routes(app)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{id}", get_batch)
    app.router.add_post("/v1/batches/{id}/cancel", cancel_batch)
