"""One real engine killed mid-run (SIGKILL, like a crash): requests it held before their first byte,
and the ones sent to it after, are retried on the other engine; every client request succeeds."""

from __future__ import annotations

import asyncio

from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, gateway_metric, real_config, until


async def test_engine_killed_mid_run_is_retried_elsewhere(fresh_llama, llama, gateway_factory, connect, figures):
    victim, survivor = fresh_llama, llama
    # probes only at start: what keeps clients whole here is the retry, not the health check
    gw = await gateway_factory(real_config([victim, survivor], server={"health_check_interval_s": 60}))
    client = connect(gw)
    answers: list[str] = []

    async def worker(w: int) -> None:
        for i in range(3):
            r = await client.chat.completions.create(  # not streamed: no byte reaches the client until the end
                model=MODEL,
                messages=[{"role": "user", "content": f"Worker {w}, request {i}: list three colours."}],
                max_tokens=32,
                extra_body={"ignore_eos": True},
            )
            answers.append(r.choices[0].message.content)

    before = await engine_counters(survivor)
    workers = [asyncio.create_task(worker(w)) for w in range(4)]
    await until(lambda: _busy(victim), timeout_s=20, every_s=0.05)
    victim.kill()
    await asyncio.gather(*workers)  # raises if any client saw an error

    assert len(answers) == 12 and all(answers)
    retries = await gateway_metric(gw.base, "switchyard_retries_total", model=MODEL)
    assert retries >= 1
    served = (await engine_counters(survivor))["generated"] - before["generated"]
    assert served > 12 * 32 / 2  # the survivor did more than its half
    figures["failover_retries_after_kill"] = retries


async def _busy(engine) -> bool:
    return (await engine_counters(engine))["running"] >= 1
