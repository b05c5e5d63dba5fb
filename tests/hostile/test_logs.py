"""Logs under faults: one line per event (exceptions as `exc_type` / `exc_message` fields, never a
multi-line traceback), repeated warnings rate-limited with a count of what was suppressed, and
stdlib loggers (aiohttp, asyncio) routed into the same JSON lines."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import orjson
import pytest

from gateway.logs import configure_logging, get_logger, reset_logging


@pytest.fixture
def captured():
    out = io.BytesIO()
    writer = configure_logging("info", "json", out=out)

    def lines() -> list[dict]:
        time.sleep(0.15)  # the writer thread flushes every 50 ms
        return [orjson.loads(line) for line in out.getvalue().splitlines()]

    yield lines
    writer.close()
    reset_logging()


def test_an_exception_is_one_line_with_its_type_and_message(captured) -> None:
    log = get_logger("t")
    try:
        {}["missing"]
    except KeyError:
        log.exception("lookup_failed", request_id="r1")
    try:
        raise ValueError("bad\nvalue " + "x" * 5000)
    except ValueError:
        log.warning("parse_failed", exc_info=True)
    lines = captured()
    assert len(lines) == 2
    first, second = lines
    assert first["event"] == "lookup_failed" and first["exc_type"] == "KeyError" and "missing" in first["exc_message"]
    assert "exc_info" not in first and "exception" not in first
    assert first["exc_where"].endswith("test_an_exception_is_one_line_with_its_type_and_message")
    assert second["exc_type"] == "ValueError" and "\n" not in second["exc_message"]
    assert len(second["exc_message"]) <= 500


def test_repeated_warnings_are_rate_limited_with_a_count(captured) -> None:
    log = get_logger("t")
    for _ in range(2000):
        log.warning("cache_store_error", op="get", error="ConnectionError")
    log.info("request", status=200)  # info lines (one per request) are never limited
    log.info("request", status=200)
    log.warning("other_event")  # another event has its own budget
    lines = captured()
    storm = [ln for ln in lines if ln["event"] == "cache_store_error"]
    assert 1 <= len(storm) <= 12
    assert sum(ln["event"] == "request" for ln in lines) == 2
    assert any(ln["event"] == "other_event" for ln in lines)


def test_the_suppressed_count_comes_with_the_next_line(captured) -> None:
    from gateway import logs

    log = get_logger("t")
    for _ in range(500):
        log.warning("redis_down")
    logs.LIMITER.advance(60)  # a minute later
    log.warning("redis_down")
    lines = [ln for ln in captured() if ln["event"] == "redis_down"]
    assert lines[-1]["suppressed"] == 500 - (len(lines) - 1)


def test_stdlib_loggers_become_one_json_line(captured) -> None:
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    for _ in range(300):
        logging.getLogger("asyncio").error("Task exception was never retrieved")
    lines = captured()
    aio = [ln for ln in lines if ln.get("logger") == "aiohttp.server"]
    assert len(aio) == 1 and aio[0]["exc_type"] == "ConnectionResetError"
    assert aio[0]["event"] == "Error handling request from 127.0.0.1" and aio[0]["level"] == "error"
    assert 1 <= sum(ln.get("logger") == "asyncio" for ln in lines) <= 10


def test_secrets_are_scrubbed_from_any_line(captured) -> None:
    log = get_logger("t")
    log.warning("odd", header="Authorization: Bearer sk-sy-abcdefghijklmnop", note="x-api-key: sk-live-123456789")
    try:
        raise ValueError("Invalid header value char:\n  b'Authorization: Bearer sk-hidden\\x01abc'")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("bad request")
    text = str(captured())
    for secret in ("sk-sy-abcdefghijklmnop", "sk-live-123456789", "sk-hidden", "abc'"):
        assert secret not in text


async def test_a_redis_outage_logs_a_few_lines_not_thousands(gateway_factory, engine_factory, captured) -> None:
    from tests.cache.helpers import cache_config, chat
    from tests.conftest import sdk

    raw = cache_config([await engine_factory()], {"store": "redis"})
    raw["redis"] = {"url": "redis://127.0.0.1:1/0", "timeout_s": 0.05}
    gw = await gateway_factory(raw)
    client = sdk(gw)
    await asyncio.gather(*(chat(client, max_tokens=1) for _ in range(60)))
    errors = [ln for ln in captured() if ln["event"] == "cache_store_error"]
    assert 1 <= len(errors) <= 10
    assert errors[0]["exc_type"] and errors[0]["op"] in ("get", "put")


def test_the_stdlib_bridge_never_hands_a_traceback_to_the_renderer(capsys) -> None:
    """structlog reset to its defaults while the bridge is on (what a test or an embedding program
    does): asyncio's "Task exception was never retrieved" for a garbage-collected SDK client was
    rendered as a rich traceback with every frame's locals, synchronously on the event loop;
    seconds under load, so the gateway on that loop stopped accepting for longer than a client's
    5 s connect timeout (tests/e2e/test_api_features.py::test_echo_alias). One line, always."""
    import structlog

    writer = configure_logging("info", "json", out=io.BytesIO())
    writer.close()
    structlog.reset_defaults()  # the bridge stays on the root logger
    try:
        secret = {"api_key": "sk-live-" + "x" * 40, "big": list(range(1000))}  # a frame's locals
        try:
            raise RuntimeError("Event loop is closed")
        except RuntimeError:
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
        del secret
        out = capsys.readouterr().out
        assert out.count("\n") == 1, out  # one line, no traceback
        assert "RuntimeError" in out and "Event loop is closed" in out
        assert "sk-live" not in out and "_limit_key" not in out
    finally:
        reset_logging()
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "StdlibBridge"]
