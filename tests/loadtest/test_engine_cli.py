"""`python -m loadtest.engine` runs a standalone engine and says it is simulated."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from loadtest.engine.__main__ import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_args_map_to_config():
    cfg = config_from_args(
        build_parser().parse_args(
            [
                "--profile",
                "sglang",
                "--seed",
                "4",
                "--time-scale",
                "3",
                "--ttft",
                "0.1",
                "--itl",
                "0.01",
                "--output-tokens",
                "9",
                "--max-num-seqs",
                "5",
                "--kv-blocks",
                "99",
                "--served-model-name",
                "a",
                "--served-model-name",
                "b",
                "--no-preemption",
            ]
        )
    )
    assert (cfg.profile, cfg.seed, cfg.time_scale, cfg.ttft_s, cfg.itl_s) == ("sglang", 4, 3.0, 0.1, 0.01)
    assert (cfg.output_tokens, cfg.max_num_seqs, cfg.kv_blocks) == (9, 5, 99)
    assert cfg.served_model_names == ["a", "b"] and cfg.preemption is False
    assert cfg.decode_base_s == 0.0
    realistic = config_from_args(build_parser().parse_args(["--realistic", "--decode-base-s", "0.5"]))
    assert realistic.decode_base_s == 0.5 and realistic.prefill_s_per_token > 0


async def test_standalone_process():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.engine",
        "--port",
        str(port),
        "--profile",
        "tgi",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert b"SIMULATED" in line and b"profile=tgi" in line and str(port).encode() in line
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert "tgi_queue_size" in await r.text()
            async with s.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            ) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
