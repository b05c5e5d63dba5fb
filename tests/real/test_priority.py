"""A client's `priority` reaches vLLM's scheduler through the gateway: vLLM runs with
`--scheduling-policy priority --max-num-seqs 2`; requests sent later with priority -10 finish before
queued ones with priority 10 (lower runs first). Without the field the same run is first come, first
served, so the order comes from the field the gateway passed on.

(The gateway setting `priority` itself from a key's admission class is another issue; this is the
client-given field, `extra_body={"priority": N}` in the openai SDK.)"""

from __future__ import annotations

import asyncio

from loadtest.real_engines import MODEL
from tests.real.helpers import engine_counters, real_config, until


async def _finish_order(client, vllm, with_priority: bool) -> list[str]:
    done: list[str] = []

    async def one(tag: str, priority: int, tokens: int) -> None:
        extra = {"ignore_eos": True, **({"priority": priority} if with_priority else {})}
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell story {tag}."}],
            max_tokens=tokens,
            extra_body=extra,
        )
        done.append(tag)

    async def queued(n: int) -> bool:
        return (await engine_counters(vllm))["waiting"] >= n

    tasks = [asyncio.create_task(one(f"busy{i}", 0, 40)) for i in range(2)]  # fill both sequences
    await until(lambda: _running(vllm, 2), timeout_s=20)
    tasks += [asyncio.create_task(one(f"low{i}", 10, 8)) for i in range(2)]
    await until(lambda: queued(2), timeout_s=20)
    tasks += [asyncio.create_task(one(f"high{i}", -10, 8)) for i in range(2)]
    await asyncio.gather(*tasks)
    return done


async def _running(vllm, n: int) -> bool:
    return (await engine_counters(vllm))["running"] >= n


def _last(order: list[str], prefix: str) -> int:
    return max(i for i, tag in enumerate(order) if tag.startswith(prefix))


def _first(order: list[str], prefix: str) -> int:
    return min(i for i, tag in enumerate(order) if tag.startswith(prefix))


async def test_lower_priority_value_finishes_first(vllm, gateway_factory, connect, figures) -> None:
    gw = await gateway_factory(real_config([vllm]))
    client = connect(gw)
    fcfs = await _finish_order(client, vllm, with_priority=False)
    assert _last(fcfs, "low") < _first(fcfs, "high"), fcfs  # control: arrival order
    ordered = await _finish_order(client, vllm, with_priority=True)
    assert _last(ordered, "high") < _first(ordered, "low"), ordered
    figures["priority_finish_order"] = {"without_priority": fcfs, "with_priority": ordered}
