"""`switchyard serve --workers 2` (gateway/workers.py): two processes on one port share state through
Redis (a key created on one works on both, revoked on one is refused by both), and /metrics sums
the workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
import redis.asyncio as redis
from openai import AsyncOpenAI

from gateway.keys import hash_key
from loadtest.overhead import free_port, wait_port
from tests.conftest import KEY_ALL, KEY_CHAT, gateway_config

ADMIN = "sk-admin-workers"
pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (make test)")


def pids_with(mdir: Path, kind: str) -> set[str]:
    return {m.group(1) for f in mdir.glob(f"{kind}_*.db") if (m := re.search(r"_(\d+)\.db$", f.name))}


async def chat(base: str, key: str) -> None:
    async with AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0) as client:  # a new connection
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)


@contextlib.asynccontextmanager
async def two_workers(raw: dict, tmp_path: Path) -> AsyncIterator[tuple[str, Path, subprocess.Popen]]:
    """`switchyard serve --workers 2` on a free port, sharing a fresh Redis prefix; yields (base URL,
    the multiprocess metrics folder, the supervisor) once both workers are up; stops it after."""
    port = free_port()
    raw["server"]["port"] = port
    raw["redis"] = {"url": os.environ["REDIS_URL"], "key_prefix": f"sy-workers-{uuid.uuid4().hex[:8]}:"}
    (tmp_path / "gw.yaml").write_text(orjson.dumps(raw).decode())
    mdir = tmp_path / "metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "gw.yaml"), "--workers", "2"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_port, port, 30)
        for _ in range(100):  # both workers up: each has probed its backends
            if len(pids_with(mdir, "gauge_livemax")) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(pids_with(mdir, "gauge_livemax")) == 2
        yield f"http://127.0.0.1:{port}", mdir, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        r = redis.from_url(os.environ["REDIS_URL"])
        await r.delete(raw["redis"]["key_prefix"] + "apikeys", raw["redis"]["key_prefix"] + "apikey_names")
        await r.aclose()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_two_workers_share_keys_through_redis_and_sum_their_metrics(engines, tmp_path: Path) -> None:
    raw = gateway_config(engines, admin_key_sha256=hash_key(ADMIN))
    raw["keystore"] = {"refresh_s": 0.2}
    async with two_workers(raw, tmp_path) as (base, mdir, proc):
        async with aiohttp.ClientSession() as s:
            async with s.post(
                base + "/admin/keys", json={"team": "ops"}, headers={"Authorization": f"Bearer {ADMIN}"}
            ) as r:
                assert r.status == 201
                created = await r.json()
        await asyncio.sleep(0.6)  # the other worker re-reads the store every 0.2 s
        for _ in range(30):
            await chat(base, created["key"])
        assert len(pids_with(mdir, "counter")) == 2  # both workers answered requests

        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/metrics") as r:
                text = await r.text()
        served = sum(
            float(v) for v in re.findall(r'^switchyard_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text, re.M)
        )
        assert served == 30  # the sum over both workers, whichever answered the scrape

        async with aiohttp.ClientSession() as s:
            async with s.delete(
                base + f"/admin/keys/{created['id']}", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as r:
                assert r.status == 200
        await asyncio.sleep(0.6)
        for _ in range(10):
            with pytest.raises(openai.AuthenticationError):
                await chat(base, created["key"])

        # POST /admin/reload on one worker reloads them all (through the supervisor).
        raw["models"].append({"name": "chat-2", "deployments": [{"backend": "e1", "model": "upstream-llama"}]})
        (tmp_path / "gw.yaml").write_text(orjson.dumps(raw).decode())
        async with aiohttp.ClientSession() as s:
            async with s.post(base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 202 and (await r.json())["workers"] == "all"
        for _ in range(50):  # until 10 fresh connections in a row (so: both workers) know chat-2
            seen = []
            for _ in range(10):
                async with AsyncOpenAI(base_url=base + "/v1", api_key=KEY_ALL, max_retries=0) as client:
                    seen.append("chat-2" in {m.id async for m in client.models.list()})
            if all(seen):
                break
            await asyncio.sleep(0.2)
        assert all(seen)
    assert proc.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_two_workers_enforce_one_rate_limit_and_one_budget_through_redis(engines, tmp_path: Path) -> None:
    raw = gateway_config(engines)
    raw["limits"] = {"rules": [{"scope": "team", "name": "research", "requests_per_minute": 20}]}
    raw["prices"] = {"chat": {"input_per_mtok": 0, "output_per_mtok": 1000}}  # $0.001 per output token
    # max_tokens 4 reserves $0.004 a request: a hard budget of $0.03 lets exactly 7 of the ops key's through.
    raw["budgets"] = {"rules": [{"scope": "team", "name": "ops", "period": "none", "hard_usd": 0.03}]}

    async def outcomes(base: str, key: str, n: int) -> list[str]:
        out = []
        for _ in range(n):  # one new connection each, so the kernel spreads them over both workers
            try:
                await chat(base, key)
                out.append("ok")
            except openai.RateLimitError as e:
                out.append(str(e.code))
        return out

    async with two_workers(raw, tmp_path) as (base, mdir, _):
        t0 = time.monotonic()
        research = await outcomes(base, KEY_ALL, 40)
        refilled = int((time.monotonic() - t0) / 3)  # 20 per minute: the bucket gains one every 3 s
        assert len(pids_with(mdir, "counter")) == 2  # both workers answered
        # 20 per minute for the team, whichever worker answers (a per-process limit would pass ~40).
        assert 20 <= research.count("ok") <= 20 + refilled, (research.count("ok"), refilled)
        assert research.count("ok") + research.count("rate_limit_exceeded") == 40

        ops = await outcomes(base, KEY_CHAT, 12)
        assert ops.count("ok") == 7 and ops.count("budget_exceeded") == 5
