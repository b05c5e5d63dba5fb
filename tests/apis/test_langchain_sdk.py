"""langchain-openai's ChatOpenAI on the Responses API (use_responses_api=True) against the native
Responses server built from the translators: text, streaming, a bound tool's call."""

from __future__ import annotations

import pytest

from tests.apis.conftest import Answer, ScriptedChat

lc = pytest.importorskip("langchain_openai")


def _chat(native):
    return lc.ChatOpenAI(model="m", base_url=native.url + "/v1", api_key="sk-lc", use_responses_api=True, max_retries=0)


async def test_invoke_and_stream(native, scripted: ScriptedChat) -> None:
    msg = await _chat(native).ainvoke("hi")
    assert msg.text == "Hello from the scripted engine."
    assert msg.usage_metadata["input_tokens"] == 11 and msg.usage_metadata["output_tokens"] == 7
    parts = [c.text async for c in _chat(native).astream("hi")]
    assert "".join(parts) == "Hello from the scripted engine."


async def test_bound_tool_call(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(text=None, calls=[("call_l", "get_weather", '{"city": "Lima"}')]))

    def get_weather(city: str) -> str:
        """Weather of a city."""
        return city

    msg = await _chat(native).bind_tools([get_weather]).ainvoke("weather in Lima?")
    assert msg.tool_calls == [{"name": "get_weather", "args": {"city": "Lima"}, "id": "call_l", "type": "tool_call"}]
    assert scripted.requests[-1]["tools"][0]["function"]["name"] == "get_weather"
