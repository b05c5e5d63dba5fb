"""Structured logs: one JSON object per line (or a human-readable line in a terminal).

Lines are rendered on the event loop (cheap: orjson) but written to stderr by a background thread,
so a slow terminal or pipe never blocks request handling. structlog has no non-blocking sink of its
own, hence the small queue writer here.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import IO, Any

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class QueueWriter:
    """A file-like sink: `write` enqueues, a daemon thread does the blocking write."""

    def __init__(self, out: IO[bytes]) -> None:
        self._q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._out = out
        self._thread = threading.Thread(target=self._drain, name="switchyard-log-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes | str) -> None:
        self._q.put(data.encode() if isinstance(data, str) else data)

    def flush(self) -> None:
        return None

    def _drain(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                break
            parts = [item]
            while True:  # batch whatever else is already queued into one write
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(parts)
                    return
                parts.append(nxt)
            self._write(parts)

    def _write(self, parts: list[bytes]) -> None:
        try:
            self._out.write(b"".join(parts))
            self._out.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self._q.put(None)
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
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _BytesLineLogger(writer),
        cache_logger_on_first_use=True,
    )
    return writer


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
