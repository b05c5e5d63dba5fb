"""Structured logs: one JSON object per line (or a human-readable line in a terminal).

Lines are rendered on the event loop (cheap: orjson) but written to stderr by a background thread,
so a slow terminal or pipe never blocks request handling. structlog has no non-blocking sink of its
own, hence the small queue writer here.

Every event is ONE line, whatever happens (gateway/logsafe.py): an exception becomes the fields
`exc_type`, `exc_message` (one line, bounded) and `exc_where` (the innermost frame), never a
multi-line traceback; warnings and errors are rate-limited per event (a burst, then one a second;
the next line that passes carries `suppressed`, the count dropped); secrets (anything after
`Bearer`, the value of an `Authorization` / `x-api-key` header, `sk-...` keys) are redacted from
every line; and the stdlib loggers (aiohttp, asyncio, ...) are routed into the same lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, Any

import orjson
import structlog

from gateway.logsafe import LIMITER, StdlibBridge, exception_fields, install_stdlib_bridge, scrub_secrets

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class QueueWriter:
    """A file-like sink: `write` appends to a list (cheap, on the event loop); a daemon thread
    swaps the list out every `interval_s` and does the blocking write in one call. Batching on a
    timer, rather than waking the thread per line, keeps it from contending for the GIL at high
    request rates."""

    def __init__(self, out: IO[bytes], interval_s: float = 0.05) -> None:
        self._pending: list[bytes] = []
        self._out = out
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="switchyard-log-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes | str) -> None:
        self._pending.append(data.encode() if isinstance(data, str) else data)

    def flush(self) -> None:
        return None

    def _drain(self) -> None:
        while not self._stop.wait(self._interval):
            self._write_pending()
        self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []  # atomic swap under the GIL
        try:
            self._out.write(b"".join(batch))
            self._out.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class _BytesLineLogger:
    """structlog logger that appends a newline and hands the line to the writer."""

    def __init__(self, writer: QueueWriter) -> None:
        self._writer = writer

    def msg(self, message: bytes | str) -> None:
        if isinstance(message, str):
            message = message.encode()
        self._writer.write(message + b"\n")

    log = debug = info = warn = warning = error = critical = exception = msg


def configure_logging(level: str = "info", fmt: str = "json", out: IO[bytes] | None = None) -> QueueWriter:
    """Configure structlog for the process (logging is process-wide by nature); return the writer
    so the caller can close it on shutdown."""
    writer = QueueWriter(out or sys.stderr.buffer)
    if fmt == "auto":  # JSON for machines (files, pipes, log shippers); readable lines in a terminal
        fmt = "console" if out is None and sys.stderr.isatty() else "json"
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            LIMITER,
            exception_fields,
            scrub_secrets,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _BytesLineLogger(writer),
        cache_logger_on_first_use=True,
    )
    install_stdlib_bridge()
    return writer


def reset_logging() -> None:
    """Undo configure_logging (tests, embedders): structlog's defaults again and the stdlib bridge
    off the root logger (left on, it would hand aiohttp's and asyncio's records to whatever
    structlog is configured with next). Close the writer configure_logging returned first."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, StdlibBridge)]:
        root.removeHandler(h)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
