"""Hot reload (gateway/reload.py): POST /admin/reload and SIGHUP swap the config; running streams
finish on the old one; an invalid file is refused with every problem and the old config serves on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from openai import AsyncOpenAI

from gateway.keys import hash_key
from gateway.server import start_gateway
from loadtest.overhead import free_port, wait_port
from tests.conftest import KEY_ALL, gateway_config, sdk, to_config

ADMIN = "sk-admin-reload"


def chat_on(engines, index: int, **server) -> dict:
    raw = gateway_config(engines, admin_key_sha256=hash_key(ADMIN), **server)
    raw["models"][0]["deployments"] = [{"backend": f"e{index}", "model": "upstream-llama"}]
    return raw


def write(path: Path, raw: dict) -> None:
    path.write_text(orjson.dumps(raw).decode())  # JSON is YAML


async def post_reload(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            return r.status, await r.json()


async def deployment_of_new_request(gw) -> str:
    raw = await sdk(gw).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    return raw.headers["x-switchyard-deployment"]


async def test_a_long_stream_survives_a_reload_that_moves_the_route(engine_factory, tmp_path: Path) -> None:
    engines = [await engine_factory(itl_s=0.05, output_tokens=30), await engine_factory()]
    path = tmp_path / "gw.yaml"
    write(path, chat_on(engines, 0))
    gw = await start_gateway(to_config(chat_on(engines, 0)), port=0, config_path=str(path))
    try:
        old = gw.current
        stream = await sdk(gw).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "a long answer"}], stream=True, max_tokens=30
        )
        chunks = [await stream.__anext__()]  # the stream is running on e0

        write(path, chat_on(engines, 1))
        status, body = await post_reload(gw.base)
        assert status == 200 and body["status"] == "reloaded"
        assert gw.current is not old
        assert (await deployment_of_new_request(gw)).startswith("e1/")  # new requests: the new route

        async for chunk in stream:  # the old stream runs to its end on the old gateway
            chunks.append(chunk)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason in ("length", "stop") and len(text) > 0
        assert engines[0].stats.completed >= 1
        for _ in range(100):  # the old gateway is stopped once drained
            if old.requests_in_flight == 0 and old.prober._task is None:
                break
            await asyncio.sleep(0.05)
        assert old.prober._task is None
    finally:
        await gw.stop()


async def test_an_invalid_file_is_refused_with_every_problem_and_the_old_config_serves(engines, tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    write(path, chat_on(engines, 0))
    gw = await start_gateway(to_config(chat_on(engines, 0)), port=0, config_path=str(path))
    try:
        bad = chat_on(engines, 1)
        bad["server"]["colour"] = "blue"  # unknown key
        bad["models"][0]["deployments"][0]["backend"] = "nowhere"  # dangling reference
        write(path, bad)
        status, body = await post_reload(gw.base)
        assert status == 400 and body["error"]["code"] == "invalid_config"
        locations = {e["location"] for e in body["errors"]}
        assert "server.colour" in locations
        assert any("deployments[0].backend" in loc for loc in locations)
        assert (await deployment_of_new_request(gw)).startswith("e0/")  # still the old config
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.base + "/metrics") as r:
                assert 'switchyard_config_reloads_total{result="rejected"} 1.0' in await r.text()
    finally:
        await gw.stop()


async def test_reload_needs_the_admin_key_and_a_config_file(engines, gateway_factory, tmp_path: Path) -> None:
    gw = await gateway_factory(chat_on(engines, 0))  # started without a file
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.base + "/admin/reload", headers={"Authorization": f"Bearer {KEY_ALL}"}) as r:
            assert r.status == 401
    status, body = await post_reload(gw.base)
    assert status == 409 and body["error"]["code"] == "reload_unavailable"


@pytest.mark.timeout(60)
async def test_sighup_reloads_a_served_gateway(engines, tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gw.yaml"
    raw = chat_on(engines, 0)
    raw["server"]["port"] = port
    write(path, raw)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.to_thread(wait_port, port)
        raw["models"].append({"name": "chat-2", "deployments": [{"backend": "e1", "model": "upstream-llama"}]})
        write(path, raw)
        os.kill(proc.pid, signal.SIGHUP)
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY_ALL, max_retries=0)
        for _ in range(100):
            ids = {m.id async for m in client.models.list()}
            if "chat-2" in ids:
                break
            await asyncio.sleep(0.1)
        assert "chat-2" in ids
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    assert b"config_reloaded" in err
