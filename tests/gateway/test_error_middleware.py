"""The one error path (gateway/app.py error_middleware): a client gone mid-answer is not a gateway
failure; anything unexpected is one logged 500 in OpenAI's shape."""

from __future__ import annotations

import io
from typing import Any
from unittest import mock

import orjson
from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.test_utils import make_mocked_request

from gateway.app import error_middleware
from gateway.app_state import GATEWAY
from gateway.logs import configure_logging, reset_logging


class _Gw:
    def __init__(self) -> None:
        import structlog

        self.log = structlog.get_logger("switchyard")

    def new_request_id(self) -> str:
        return "r1"


def _request(closing: bool) -> web.Request:
    transport = mock.Mock()
    transport.is_closing.return_value = closing
    app = web.Application()
    app[GATEWAY] = mock.Mock(current=_Gw())  # type: ignore[misc]  # a stand-in GatewayRef
    return make_mocked_request("POST", "/v1/chat/completions", app=app, transport=transport)


async def _run(closing: bool, exc: Exception) -> tuple[web.StreamResponse, list[dict[str, Any]]]:
    out = io.BytesIO()
    writer = configure_logging("info", "json", out=out)

    async def handler(_: web.Request) -> web.StreamResponse:
        raise exc

    try:
        resp = await error_middleware(_request(closing), handler)
    finally:
        writer.close()
        reset_logging()
    return resp, [orjson.loads(line) for line in out.getvalue().splitlines()]


async def test_a_write_to_a_client_that_is_gone_is_no_error() -> None:
    resp, lines = await _run(True, ClientConnectionResetError("Cannot write to closing transport"))
    assert resp.status == 499  # never sent: the connection is closing
    assert not [line for line in lines if line.get("level") in ("error", "critical")], lines


async def test_a_reset_on_a_live_connection_is_still_a_logged_500() -> None:
    resp, lines = await _run(False, ConnectionResetError("upstream reset"))
    assert resp.status == 500
    assert [line["event"] for line in lines] == ["handler_failed"]
