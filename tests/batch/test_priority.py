"""Batch lines run at the lowest class: on a saturated engine they fill the slots interactive and
batch-class work leave free, interactive requests overtake every waiting line (their wait stays
about one line's length, not the backlog's), and the engine never runs more than its limit. Budgets
are charged per line, settled to the usage."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from gateway.keys import hash_key
from tests.batch.conftest import line, output_lines, start_batch, wait_final
from tests.conftest import KEY_ALL, sdk
from tests.e2e.test_admission import TinyEngine, tiny  # noqa: F401  (the fixture)
from tests.limits.helpers import settled

SLOTS = 2
NO_RESERVE = {"classes": {"interactive": {"max_wait_s": 30}, "background": {"max_wait_s": 600, "reserve_slots": 0}}}
LINE_S = 0.2  # each answer: 10 tokens 20 ms apart


def config(engine: TinyEngine, db: str, **batch: object) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 5},
        "backends": [{"name": "e0", "kind": "vllm", "url": engine.url, "max_concurrency": SLOTS}],
        "models": [{"name": "chat", "deployments": [{"backend": "e0", "model": "m"}]}],
        "teams": [{"name": "research"}],
        "keys": [{"name": "research-agents", "team": "research", "sha256": hash_key(KEY_ALL)}],
        "load_signals": {"enabled": False},
        "batch": {"store": f"sqlite:///{db}", "poll_s": 0.05, **batch},
    }


@pytest.mark.timeout(120)
async def test_interactive_requests_overtake_a_running_batch(tiny, gateway_factory, tmp_path) -> None:  # noqa: F811
    engine = await tiny(tokens=10, itl_s=LINE_S / 10)
    # a window as large as the batch: every line waits in the admission queue at once; no slot
    # reserved (reserve_slots 0): interactive requests get one only by overtaking the waiting lines
    raw = config(engine, str(tmp_path / "b.db"), initial_window=60, max_window=60)
    raw["admission"] = NO_RESERVE
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}", max_tokens=10) for i in range(60)])
    while engine.running < SLOTS:  # the batch fills the engine
        await asyncio.sleep(0.01)
    waits: list[float] = []
    for _ in range(8):
        started = time.monotonic()
        answer = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "now"}], max_tokens=2
        )
        waits.append(time.monotonic() - started)
        assert int(answer.headers.get("x-switchyard-queue-ms", "0")) < 3 * LINE_S * 1000
        await asyncio.sleep(0.05)
    done = await wait_final(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 60
    assert engine.peak <= SLOTS  # never above the engine's limit
    # FCFS behind 60 waiting lines would be ~60 / 2 x 0.2 s = 6 s; overtaking: about one line
    assert max(waits) < 3 * LINE_S + 0.3, waits


async def test_batch_lines_are_charged_to_the_team(engine_factory, gateway_factory, tmp_path) -> None:
    from tests.batch.conftest import batch_config

    engine = await engine_factory(output_tokens=7)
    raw = batch_config([engine], str(tmp_path / "b.db"))
    raw["prices"] = {"chat": {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}}  # $1 / $2 per token
    raw["budgets"] = {
        "sqlite_path": str(tmp_path / "spend.db"),
        "rules": [{"scope": "team", "name": "research", "period": "monthly", "hard_usd": 1_000_000}],
    }
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}", f"question number {i}") for i in range(10)])
    done = await wait_final(client, batch.id)
    assert done.status == "completed" and done.usage is not None
    await settled(gw)
    assert gw.current.limits is not None
    spend = await gw.current.limits.spend(team="research")
    want = done.usage.input_tokens * 1 + done.usage.output_tokens * 2
    assert done.usage.output_tokens == 70
    assert spend["spend_usd"] == pytest.approx(want), spend


async def test_batch_lines_leave_a_slot_free_for_interactive_arrivals(tiny, gateway_factory, tmp_path) -> None:  # noqa: F811
    engine = await tiny(tokens=10, itl_s=0.03)
    raw = config(engine, str(tmp_path / "b.db"), initial_window=20, max_window=20)
    raw["backends"][0]["max_concurrency"] = 4  # background: reserve_slots = 1 by default
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}", max_tokens=10) for i in range(30)])
    while engine.running < 3:
        await asyncio.sleep(0.01)
    answer = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "now"}], max_tokens=2
    )
    assert int(answer.headers.get("x-switchyard-queue-ms", "0")) <= 10  # a free slot at once
    done = await wait_final(client, batch.id)
    assert done.request_counts.completed == 30
    assert engine.peak == 4  # three batch lines and the interactive request, never more


async def test_without_a_reserve_batch_lines_fill_every_slot(tiny, gateway_factory, tmp_path) -> None:  # noqa: F811
    engine = await tiny(tokens=10, itl_s=0.01)
    raw = config(engine, str(tmp_path / "b.db"), initial_window=20, max_window=20)
    raw["backends"][0]["max_concurrency"] = 4
    raw["admission"] = NO_RESERVE
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}", max_tokens=10) for i in range(30)])
    assert (await wait_final(client, batch.id)).request_counts.completed == 30
    assert engine.peak == 4


async def test_a_waiting_interactive_request_preempts_a_batch_line(tiny, gateway_factory, tmp_path) -> None:  # noqa: F811
    engine = await tiny(tokens=20, itl_s=0.05)  # a line holds its slot ~1 s
    raw = config(engine, str(tmp_path / "b.db"), initial_window=10, max_window=10)
    raw["admission"] = {
        "classes": {
            "interactive": {"max_wait_s": 30},
            "background": {"max_wait_s": 600, "reserve_slots": 0, "preemptible": True},
        }
    }
    gw = await gateway_factory(raw)
    client = sdk(gw)
    batch = await start_batch(client, [line(f"r{i}", max_tokens=20) for i in range(8)])
    while engine.running < SLOTS:  # both slots hold batch lines
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    answer = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "now"}], max_tokens=2
    )
    assert int(answer.headers.get("x-switchyard-queue-ms", "0")) < 300  # not the ~1 s a line takes to end
    done = await wait_final(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 8
    out = await output_lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(f"r{i}" for i in range(8))  # the preempted line ran again
    # (no engine.peak check here: this test engine finishes a closed request's sleep; vLLM aborts it)
    async with aiohttp.ClientSession() as s, s.get(gw.base + "/metrics") as r:
        assert 'switchyard_batch_lines_finished_total{outcome="preempted",team="research"} 1.0' in await r.text()
