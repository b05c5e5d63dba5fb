"""openai-agents' default Runner (Responses API model) completes a function-tool turn against the
native Responses server built from the translators over a scripted chat engine."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from tests.apis.conftest import Answer, ScriptedChat

agents = pytest.importorskip("agents")


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI


def _agent(native, calls: list[str]):
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return f"{city}: 21C and sunny"

    client = AsyncOpenAI(base_url=native.url + "/v1", api_key="sk-agent", max_retries=0)
    model = agents.OpenAIResponsesModel(model="m", openai_client=client)
    return agents.Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model=model)


async def test_runner_with_function_tool(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(text=None, calls=[("call_w", "get_weather", '{"city":"Paris"}')]), Answer(text="Sunny, 21C."))
    calls: list[str] = []
    result = await agents.Runner.run(_agent(native, calls), "Weather in Paris?")
    assert result.final_output == "Sunny, 21C." and calls == ["Paris"]
    last = scripted.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "Answer with the weather."}
    assert [m["role"] for m in last] == ["system", "user", "assistant", "tool"]
    assert last[3] == {"role": "tool", "tool_call_id": "call_w", "content": "Paris: 21C and sunny"}


async def test_runner_streamed(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(text=None, calls=[("call_s", "get_weather", '{"city":"Oslo"}')]), Answer(text="Cold."))
    calls: list[str] = []
    result = agents.Runner.run_streamed(_agent(native, calls), "Weather in Oslo?")
    kinds = [e.type async for e in result.stream_events()]
    assert "raw_response_event" in kinds and result.final_output == "Cold." and calls == ["Oslo"]
