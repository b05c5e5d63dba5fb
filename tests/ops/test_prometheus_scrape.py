"""A real Prometheus (/usr/bin/prometheus) scrapes a gateway on loopback; the numbers come back
through its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from loadtest.overhead import free_port, wait_port
from tests.conftest import sdk

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")


@pytest.mark.timeout(90)
async def test_prometheus_scrapes_the_gateway_and_answers_a_query(gateway, tmp_path: Path) -> None:
    client = sdk(gateway)
    for _ in range(3):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: switchyard\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{gateway.port}']\n"
    )
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    query = 'sum(switchyard_requests_total{model="chat",status="200"})'
    try:
        await asyncio.to_thread(wait_port, port, 30)
        value = None
        async with aiohttp.ClientSession() as s:
            for _ in range(120):
                async with s.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}) as r:
                    result = (await r.json())["data"]["result"] if r.status == 200 else []  # 503 while starting
                if result:
                    value = float(result[0]["value"][1])
                    break
                await asyncio.sleep(0.5)
            async with s.get(f"http://127.0.0.1:{port}/api/v1/targets") as r:
                targets = (await r.json())["data"]["activeTargets"]
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
    assert value == 3.0
    assert targets[0]["health"] == "up"
