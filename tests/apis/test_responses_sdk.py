"""The official openai SDK parses what the Responses translators produce (native server over a
scripted chat engine): create / stream / parse, tool-call round trips, state, errors."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.apis.conftest import Answer, ScriptedChat

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def client(native, key: str = "sk-a") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=native.url + "/v1", api_key=key, max_retries=0)


async def test_create_text(native, scripted: ScriptedChat) -> None:
    r = await client(native).responses.create(model="m", input="hi", instructions="Be brief.", max_output_tokens=50)
    assert r.output_text == "Hello from the scripted engine."
    assert r.id.startswith("resp_") and r.status == "completed" and r.model == "m"
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (11, 7, 18)
    sent = scripted.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent["max_tokens"] == 50 and "stream" not in sent


async def test_stream_events(native, scripted: ScriptedChat) -> None:
    stream = await client(native).responses.create(model="m", input="hi", stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the scripted engine."
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == 7
    assert scripted.requests[-1]["stream_options"] == {"include_usage": True}


async def test_stream_helper_and_final_response(native) -> None:
    async with client(native).responses.stream(model="m", input="hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from the scripted engine."


class Weather(BaseModel):
    city: str
    celsius: int


async def test_parse_structured_output(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(text='{"city": "Paris", "celsius": 21}'))
    r = await client(native).responses.parse(model="m", input="weather?", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", celsius=21)
    fmt = scripted.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["strict"] is True and "celsius" in fmt["json_schema"]["schema"]["properties"]


async def test_tool_round_trip_previous_response_id(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(text=None, calls=[("call_1", "get_weather", '{"city":"Paris"}')]), Answer(text="Sunny."))
    c = client(native)
    r1 = await c.responses.create(model="m", input="Weather in Paris?", tools=TOOLS, instructions="sys")
    (call,) = r1.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_1"
    assert call.arguments == '{"city":"Paris"}'
    sent1 = scripted.requests[-1]
    assert sent1["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": TOOLS[0]["parameters"],
            "description": "Weather of a city",
        },
    }
    r2 = await c.responses.create(
        model="m",
        previous_response_id=r1.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C, sunny"}],
        tools=TOOLS,
    )
    assert r2.output_text == "Sunny." and r2.previous_response_id == r1.id
    assert scripted.requests[-1]["messages"] == [  # instructions of r1 are not carried over
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21C, sunny"},
    ]
    # a third turn chains on r2 (its stored conversation includes r1's)
    r3 = await c.responses.create(model="m", previous_response_id=r2.id, input="thanks")
    assert len(scripted.requests[-1]["messages"]) == 5 and r3.status == "completed"


async def test_stream_tool_calls(native, scripted: ScriptedChat) -> None:
    scripted.push(
        Answer(
            text="Checking.",
            calls=[("call_a", "get_weather", '{"city":"Paris"}'), ("call_b", "get_weather", '{"city":"Oslo"}')],
        ),
        Answer(text="Done."),
    )
    c = client(native)
    async with c.responses.stream(model="m", input="two cities", tools=TOOLS) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.count("response.output_item.done") == 3
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert [o.arguments for o in final.output[1:]] == ['{"city":"Paris"}', '{"city":"Oslo"}']
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [d.output_index for d in done] == [1, 2] and done[0].name == "get_weather"
    # the streamed answer was stored: follow up with both outputs
    outs = [{"type": "function_call_output", "call_id": o.call_id, "output": "ok"} for o in final.output[1:]]
    r2 = await c.responses.create(model="m", previous_response_id=final.id, input=outs)
    assert r2.output_text == "Done."
    msgs = scripted.requests[-1]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool"]
    assert msgs[1]["content"] == "Checking." and len(msgs[1]["tool_calls"]) == 2


async def test_explicit_items_without_store(native, scripted: ScriptedChat) -> None:
    c = client(native)
    items = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "hot"},
    ]
    r = await c.responses.create(
        model="m", input=items, tools=TOOLS, store=False, include=["reasoning.encrypted_content"]
    )
    assert r.output_text and r.store is False  # type: ignore[attr-defined]  # not in the SDK's model
    assert [m["role"] for m in scripted.requests[-1]["messages"]] == ["system", "user", "assistant", "tool"]
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        await c.responses.create(model="m", previous_response_id=r.id, input="more")


async def test_retrieve_and_delete_are_per_owner(native) -> None:
    mine, other = client(native, "sk-a"), client(native, "sk-b")
    r = await mine.responses.create(model="m", input="hi")
    got = await mine.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError):
        await other.responses.create(model="m", previous_response_id=r.id, input="x")
    await mine.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await mine.responses.retrieve(r.id)


async def test_incomplete_on_length(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(finish="length"), Answer(finish="length"))
    c = client(native)
    r = await c.responses.create(model="m", input="hi", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    events = [e async for e in await c.responses.create(model="m", input="hi", stream=True)]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


async def test_errors_map_to_sdk_classes(native, scripted: ScriptedChat) -> None:
    c = client(native)
    with pytest.raises(openai.BadRequestError, match="web_search"):
        await c.responses.create(model="m", input="hi", tools=[{"type": "web_search"}])
    scripted.push(Answer(status=429))
    with pytest.raises(openai.RateLimitError):
        await c.responses.create(model="m", input="hi")
    with pytest.raises(openai.AuthenticationError):
        await c.responses.create(model="m", input="hi", extra_headers={"Authorization": ""})


async def test_stream_cut_ends_with_response_failed(native, scripted: ScriptedChat) -> None:
    scripted.push(Answer(cut=True))
    events = [e async for e in await client(native).responses.create(model="m", input="hi", stream=True)]
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
    assert events[-2].type == "response.output_item.done"
