"""The OpenAI Responses API through the whole gateway (issue #14), with the official openai SDK, the
OpenAI Agents SDK's default Runner and LangChain's ChatOpenAI(use_responses_api=True), each against a
translating backend (a chat-completions engine) and a native one (a server with its own
/v1/responses: the gateway passes the request through)."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.apis.conftest import Answer
from tests.conftest import KEY_ALL
from tests.e2e.conftest import KEY_OTHER_TEAM, KEY_SAME_TEAM, ApiSetup

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def client(api: ApiSetup, key: str = KEY_ALL) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=api.gw.url, api_key=key, max_retries=0)


async def test_create(api: ApiSetup) -> None:
    raw = await client(api).responses.with_raw_response.create(
        model="m", input="hi", instructions="Be brief.", max_output_tokens=50
    )
    r = raw.parse()
    assert r.output_text == "Hello from the scripted engine." and r.status == "completed"
    assert r.id.startswith("resp_") and r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 7, 18)
    assert raw.headers["x-switchyard-deployment"] == "b0/up-m" and raw.headers["x-request-id"]
    sent = api.chat.requests[-1]
    assert sent["model"] == "up-m" and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    if api.is_native:  # passed through: the backend's own API got the client's request
        assert api.native is not None and api.native.last_request["instructions"] == "Be brief."


async def test_stream(api: ApiSetup) -> None:
    stream = await client(api).responses.create(model="m", input="hi", stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == "Hello from the scripted engine."
    assert events[-1].response.usage.output_tokens == 7


async def test_stream_helper(api: ApiSetup) -> None:
    async with client(api).responses.stream(model="m", input="hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from the scripted engine."


async def test_tools_round_trip_with_previous_response_id(api: ApiSetup) -> None:
    api.chat.push(Answer(text=None, calls=[("call_1", "get_weather", '{"city":"Paris"}')]), Answer(text="Sunny."))
    c = client(api)
    r1 = await c.responses.create(model="m", input="Weather in Paris?", tools=TOOLS, instructions="sys")
    (call,) = r1.output
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city":"Paris"}'
    r2 = await c.responses.create(
        model="m",
        previous_response_id=r1.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C, sunny"}],
        tools=TOOLS,
    )
    assert r2.output_text == "Sunny." and r2.previous_response_id == r1.id
    roles = [m["role"] for m in api.chat.requests[-1]["messages"]]
    assert roles == ["user", "assistant", "tool"]  # the history rebuilt from the stored first turn
    r3 = await c.responses.create(model="m", previous_response_id=r2.id, input="thanks")
    assert len(api.chat.requests[-1]["messages"]) == 5 and r3.status == "completed"


async def test_streamed_answer_is_stored_for_follow_ups(api: ApiSetup) -> None:
    api.chat.push(Answer(text="Checking.", calls=[("c_a", "get_weather", '{"city":"Oslo"}')]), Answer(text="Done."))
    c = client(api)
    async with c.responses.stream(model="m", input="Oslo?", tools=TOOLS) as stream:
        final = await stream.get_final_response()
    out = [{"type": "function_call_output", "call_id": final.output[1].call_id, "output": "cold"}]
    r2 = await c.responses.create(model="m", previous_response_id=final.id, input=out)
    assert r2.output_text == "Done."
    msgs = api.chat.requests[-1]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"] and msgs[1]["content"] == "Checking."


class Weather(BaseModel):
    city: str
    celsius: int


async def test_parse_structured_output(api: ApiSetup) -> None:
    api.chat.push(Answer(text='{"city": "Paris", "celsius": 21}'))
    r = await client(api).responses.parse(model="m", input="weather?", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", celsius=21)
    fmt = api.chat.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"


async def test_retrieve_delete_and_ids_never_cross_keys(api: ApiSetup) -> None:
    mine = client(api)
    r = await mine.responses.create(model="m", input="hi")
    got = await mine.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    for key in (KEY_SAME_TEAM, KEY_OTHER_TEAM):  # another key of the same team, another team
        other = client(api, key)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(r.id)
        with pytest.raises(openai.BadRequestError, match="not found"):
            await other.responses.create(model="m", previous_response_id=r.id, input="x")
    with pytest.raises(openai.BadRequestError, match="background"):
        await mine.responses.cancel(r.id)
    await mine.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await mine.responses.retrieve(r.id)


async def test_codex_style_request(api: ApiSetup) -> None:
    """store false, reasoning items with encrypted content, include, function_call items."""
    c = client(api)
    items = [
        {"role": "developer", "content": "You are a coding agent."},
        {"role": "user", "content": [{"type": "input_text", "text": "Fix the test."}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "hot"},
    ]
    r = await c.responses.create(
        model="m",
        input=items,
        tools=TOOLS,
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        parallel_tool_calls=True,
    )
    assert r.output_text and r.store is False
    sent = api.chat.requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool"]
    assert sent["reasoning_effort"] == "low"
    with pytest.raises(openai.NotFoundError):  # store false: nothing kept
        await c.responses.retrieve(r.id)


async def test_errors_in_openai_shape(api: ApiSetup) -> None:
    c = client(api)
    with pytest.raises(openai.AuthenticationError):
        await AsyncOpenAI(base_url=api.gw.url, api_key="sk-wrong", max_retries=0).responses.create(
            model="m", input="hi"
        )
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await c.responses.create(model="nope", input="hi")
    with pytest.raises(openai.BadRequestError, match="input"):
        await c.responses.create(model="m", input=5)
    with pytest.raises(openai.BadRequestError, match="not found"):
        await c.responses.create(model="m", input="x", previous_response_id="resp_unknown")
    api.chat.push(Answer(status=400))
    with pytest.raises(openai.BadRequestError, match="scripted 400"):  # the engine's own words
        await c.responses.create(model="m", input="hi")


async def test_agents_sdk_default_runner_with_function_tool(api: ApiSetup) -> None:
    agents = pytest.importorskip("agents")
    from agents.models.openai_provider import OpenAIProvider

    agents.set_tracing_disabled(True)
    api.chat.push(Answer(text=None, calls=[("call_w", "get_weather", '{"city":"Paris"}')]), Answer(text="Sunny."))
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return f"{city}: 21C"

    agent = agents.Agent(name="w", instructions="Answer with the weather.", tools=[get_weather], model="m")
    config = agents.RunConfig(model_provider=OpenAIProvider(openai_client=client(api)))
    result = await agents.Runner.run(agent, "Weather in Paris?", run_config=config)
    assert result.final_output == "Sunny." and calls == ["Paris"]
    last = api.chat.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "tool"]
    assert last[3] == {"role": "tool", "tool_call_id": "call_w", "content": "Paris: 21C"}


async def test_langchain_use_responses_api(api: ApiSetup) -> None:
    lc = pytest.importorskip("langchain_openai")
    chat = lc.ChatOpenAI(model="m", base_url=api.gw.url, api_key=KEY_ALL, use_responses_api=True, max_retries=0)
    msg = await chat.ainvoke("hi")
    assert msg.text == "Hello from the scripted engine." and msg.usage_metadata["output_tokens"] == 7
    assert "".join([c.text async for c in chat.astream("hi")]) == "Hello from the scripted engine."
    api.chat.push(Answer(text=None, calls=[("call_l", "get_weather", '{"city": "Lima"}')]))

    def get_weather(city: str) -> str:
        """Weather of a city."""
        return city

    msg = await chat.bind_tools([get_weather]).ainvoke("weather in Lima?")
    assert msg.tool_calls == [{"name": "get_weather", "args": {"city": "Lima"}, "id": "call_l", "type": "tool_call"}]


async def test_stream_broken_after_start_ends_with_response_failed(api: ApiSetup) -> None:
    api.chat.push(Answer(cut=True))
    events = [e async for e in await client(api).responses.create(model="m", input="hi", stream=True)]
    assert events[-1].type == "response.failed" and events[-1].response.status == "failed"
