"""One agent: a multi-turn session through the gateway with the official openai SDK, streaming,
like a real tool-using agent. Every LLM call, turn and session is recorded (wall seconds since the
run started; the report converts to simulated seconds)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai import AsyncOpenAI

from gateway.request import SESSION_HEADER
from loadtest.swarm import workload
from loadtest.swarm.scenarios import AgentKind

PRIORITY_HEADER = "x-switchyard-priority"


@dataclass(slots=True)
class Call:
    session: str
    kind: str
    start: float
    ttft: float | None = None
    latency: float | None = None
    error: str | None = None  # None = answered in full
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class Turn:
    session: str
    kind: str
    start: float
    latency: float | None = None  # None = the turn failed
    calls: int = 0


@dataclass(slots=True)
class Session:
    session: str
    kind: str
    planned_turns: int
    start: float = 0.0
    duration: float | None = None  # None = ended by an error


@dataclass
class Recorder:
    t0: float = field(default_factory=time.perf_counter)
    calls: list[Call] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)

    def now(self) -> float:
        return time.perf_counter() - self.t0


@dataclass(frozen=True)
class AgentSpec:
    session: str
    kind: AgentKind
    seed: int
    start_s: float  # simulated seconds after the run starts
    system: str


class Agent:
    def __init__(self, client: AsyncOpenAI, model: str, spec: AgentSpec, rec: Recorder, time_scale: float) -> None:
        self.client, self.model, self.spec, self.rec, self.scale = client, model, spec, rec, time_scale
        self.rng = random.Random(spec.seed)
        self.headers = {SESSION_HEADER: spec.session, PRIORITY_HEADER: spec.kind.priority}

    async def sleep(self, bounds: tuple[float, float]) -> None:
        seconds = self.rng.uniform(*bounds)
        if seconds > 0:
            await asyncio.sleep(seconds / self.scale)

    async def run(self) -> None:
        kind, rng = self.spec.kind, self.rng
        session = Session(self.spec.session, kind.name, rng.randint(*kind.turns))
        self.rec.sessions.append(session)
        await asyncio.sleep(self.spec.start_s / self.scale)
        session.start = self.rec.now()
        first = workload.text(rng, rng.randint(*kind.context_tokens)) if kind.context_tokens[1] else ""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.spec.system}]
        for n in range(session.planned_turns):
            if n:
                await self.sleep(kind.think_s)
            question = workload.text(rng, rng.randint(*kind.user_tokens))
            content = f"Context:\n{first}\n\nTask: {question}" if n == 0 and first else question
            messages.append({"role": "user", "content": content})
            if not await self.turn(
                messages, use_tool=bool(kind.tool_every) and n % kind.tool_every == kind.tool_every - 1
            ):
                return
        session.duration = self.rec.now() - session.start

    async def turn(self, messages: list[dict[str, Any]], use_tool: bool) -> bool:
        turn = Turn(self.spec.session, self.spec.kind.name, self.rec.now())
        self.rec.turns.append(turn)
        reply = await self.call(messages, "auto" if use_tool else "none")
        turn.calls += 1
        if reply is None:
            return False
        messages.append(reply)
        for tool_call in reply.get("tool_calls") or []:
            await self.sleep(self.spec.kind.tool_s)
            messages.append(
                {"role": "tool", "tool_call_id": tool_call["id"], "content": workload.tool_result(self.rng)}
            )
        if reply.get("tool_calls"):
            reply = await self.call(messages, "none")
            turn.calls += 1
            if reply is None:
                return False
            messages.append(reply)
        turn.latency = self.rec.now() - turn.start
        return True

    async def call(self, messages: list[dict[str, Any]], tool_choice: str) -> dict[str, Any] | None:
        """One streamed chat completion; returns the assistant message, or None on an error."""
        call = Call(self.spec.session, self.spec.kind.name, self.rec.now())
        self.rec.calls.append(call)
        text: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        try:
            stream = await self.client.chat.completions.create(
                model=self.model,
                messages=cast(Any, messages),  # plain dicts: the SDK's TypedDicts are not worth building here
                tools=cast(Any, workload.TOOLS),
                tool_choice=cast(Any, tool_choice),
                max_tokens=self.spec.kind.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=self.headers,
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    call.prompt_tokens = chunk.usage.prompt_tokens
                    call.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta
                    if call.ttft is None and (delta.content or delta.tool_calls):
                        call.ttft = self.rec.now() - call.start
                    if delta.content:
                        text.append(delta.content)
                    for tc in delta.tool_calls or []:
                        slot = tools.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = tc.id or slot["id"]
                        if tc.function is not None:
                            slot["name"] = tc.function.name or slot["name"]
                            slot["arguments"] += tc.function.arguments or ""
        except openai.APIStatusError as e:
            call.error = f"http_{e.status_code}"
            return None
        except openai.APITimeoutError:
            call.error = "timeout"
            return None
        except openai.APIConnectionError:
            call.error = "connection"
            return None
        except Exception as e:  # a stream that broke mid-way, a malformed event: still accounted for
            call.error = type(e).__name__
            return None
        call.latency = self.rec.now() - call.start
        if tools:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": t["id"], "type": "function", "function": {"name": t["name"], "arguments": t["arguments"]}}
                    for t in tools.values()
                ],
            }
        return {"role": "assistant", "content": "".join(text)}
