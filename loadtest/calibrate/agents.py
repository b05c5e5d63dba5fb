"""The calibration swarm: agents in multi-turn sessions sharing one system prompt, streaming through
the gateway with the openai SDK. The same run (same prompts, same answer lengths: `ignore_eos` with
`max_tokens`) goes against real and simulated engines; only the engines differ.

Each agent: a ~500-token system prompt shared by all, its own ~150-token task in the first turn,
then short follow-ups; every turn sends the whole conversation so far (an agent's history is the
prefix its next turn can reuse), `answer_tokens` answered, `think_s` between turns. Agents start
`ramp_s` apart. A fresh run tag at the front of the system prompt keeps runs from sharing a cache.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from openai import AsyncOpenAI

from gateway.request import SESSION_HEADER


@dataclass(frozen=True)
class Workload:
    agents: int = 6
    turns: int = 4
    answer_tokens: int = 24
    think_s: float = 0.3
    ramp_s: float = 0.5


@dataclass
class Record:
    ttft_s: list[float] = field(default_factory=list)  # per call: request sent -> first content token
    turn_s: list[float] = field(default_factory=list)  # per call: request sent -> last byte
    wall_s: float = 0.0
    errors: int = 0

    def merge(self, other: Record) -> None:
        self.ttft_s += other.ttft_s
        self.turn_s += other.turn_s
        self.wall_s += other.wall_s
        self.errors += other.errors

    def summary(self) -> str:
        n = len(self.turn_s) or 1
        return (
            f"{len(self.turn_s)} calls, TTFT mean {sum(self.ttft_s) / n:.2f} s, turn mean {sum(self.turn_s) / n:.2f} s, "
            f"wall {self.wall_s:.1f} s, errors {self.errors}"
        )


def system_prompt(tag: str) -> str:
    rules = " ".join(
        f"Rule {i}: when a wagon of class {chr(65 + i % 26)} reaches yard {i % 9}, confirm its seal, "
        f"weigh it, log the result and tell the dispatcher about any delay longer than {5 + i % 20} minutes."
        for i in range(14)
    )
    return f"[{tag}] You are an operations agent for a freight railway. {rules}"


def task(agent: int) -> str:
    return f"Agent {agent}: today's yard log. " + " ".join(
        f"Wagon {agent}-{w} at platform {(agent * 5 + w) % 12}, {12 + (agent + w) % 30} t, seal {agent * 997 + w}."
        for w in range(10)
    )


def follow_up(agent: int, turn: int) -> str:
    return f"Turn {turn}: which of wagons {agent}-{turn} to {agent}-{turn + 3} are late, and what do you log?"


async def run_swarm(client: AsyncOpenAI, model: str, tag: str, w: Workload, sessions: str = "") -> Record:
    """`tag` makes the prompts unique to the run; `sessions` prefixes the session ids (the same on
    the real and the simulated side, so session-affinity places the agents the same way)."""
    rec = Record()
    system = system_prompt(tag)

    async def agent(a: int) -> None:
        await asyncio.sleep(a * w.ramp_s)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": task(a)}]
        for t in range(w.turns):
            if t:
                await asyncio.sleep(w.think_s)
                messages.append({"role": "user", "content": follow_up(a, t)})
            answer = await _call(client, model, messages, w.answer_tokens, f"{sessions or tag}-agent-{a}", rec)
            messages.append({"role": "assistant", "content": answer})

    t0 = time.monotonic()
    await asyncio.gather(*(agent(a) for a in range(w.agents)))
    rec.wall_s = time.monotonic() - t0
    return rec


async def _call(client: AsyncOpenAI, model: str, messages: list, tokens: int, session: str, rec: Record) -> str:
    t0 = time.monotonic()
    first = None
    parts: list[str] = []
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=tokens,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
            extra_headers={SESSION_HEADER: session},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic()
                parts.append(chunk.choices[0].delta.content)
    except Exception:  # noqa: BLE001  (counted: the table shows errors per run)
        rec.errors += 1
        return ""
    end = time.monotonic()
    rec.ttft_s.append((first or end) - t0)
    rec.turn_s.append(end - t0)
    return "".join(parts)
