"""Logs: JSON lines when stderr is a pipe or file (the default `log_format = "auto"`), readable
lines when it is a terminal; the level comes from the config."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import orjson

from loadtest.overhead import free_port, wait_port


def first_lines(config: Path, stderr_tty: bool, want: bytes | None, port: int = 0) -> bytes:
    """Run `switchyard serve` until `want` shows up on its stderr (or, without `want`, until
    `port` answers, plus half a second); return what it wrote."""
    master = slave = None
    if stderr_tty:
        master, slave = pty.openpty()
        stderr: int = slave
    else:
        stderr = subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
    )
    fd: int = master if master is not None else proc.stderr.fileno()
    out = b""
    deadline = time.time() + 20
    try:
        if want is None:
            wait_port(port)
            deadline = time.time() + 0.5
        while (want is None or want not in out) and time.time() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                out += os.read(fd, 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for f in (master, slave):
            if f is not None:
                os.close(f)
    return out


def test_json_on_a_pipe_and_readable_on_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"[server]\nport = {free_port()}\n")
    piped = first_lines(config, stderr_tty=False, want=b"listening")
    line = next(ln for ln in piped.splitlines() if b"listening" in ln)
    assert orjson.loads(line)["event"] == "listening"

    on_tty = first_lines(config, stderr_tty=True, want=b"listening")
    line = next(ln for ln in on_tty.splitlines() if b"listening" in ln)
    assert not line.lstrip().startswith(b"{") and b"listening" in line


def test_level_from_the_config_hides_info_lines(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    port = free_port()
    config.write_text(f'[server]\nport = {port}\nlog_level = "warning"\n')
    out = first_lines(config, stderr_tty=False, want=None, port=port)
    assert b"listening" not in out and b"gateway_started" not in out
