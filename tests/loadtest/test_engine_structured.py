"""Structured output from the simulated engine, as an agent framework relies on it: json_object and
json_schema answers are valid JSON that fits the schema (pydantic's schemas included, parsed by the
openai SDK), and tool_choice "required" or a named tool is always answered with a tool call."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import jsonschema
import orjson
import pytest
from pydantic import BaseModel, Field

from loadtest.engine.schema_fill import fill

ASK = [{"role": "user", "content": "Plan the trip."}]


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Stop(BaseModel):
    city: str = Field(min_length=12)
    nights: int = Field(ge=2, le=5)
    budget: float = Field(gt=100, multiple_of=25)
    unit: Unit
    tags: list[str] = Field(min_length=2, max_length=3)


class Trip(BaseModel):
    title: str
    kind: Literal["business", "leisure"]
    stops: list[Stop] = Field(min_length=1)
    lead: Stop | None
    notes: dict[str, int]


SCHEMAS = {
    "pydantic with $defs, anyOf, enum, bounds": Trip.model_json_schema(),
    "formats and patterns": {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email"},
            "code": {"type": "string", "pattern": "^[0-9]+$"},
            "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
        },
        "required": ["when", "mail", "code", "ids"],
        "additionalProperties": False,
    },
    "allOf, type list, const, exclusive bounds": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": ["null", "integer"], "exclusiveMinimum": 7}}},
            {"properties": {"b": {"const": "fixed"}, "c": {"type": "number", "exclusiveMaximum": 0}}},
        ],
        "required": ["a", "b", "c", "d"],
    },
    "a recursive schema ends": {
        "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    },
}


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_filled_value_validates_against_the_schema(schema) -> None:
    jsonschema.validate(fill(schema), schema)


@pytest.mark.parametrize("stream", [False, True])
async def test_json_schema_answer_parses_into_the_pydantic_model(engine, sdk, stream) -> None:
    client = sdk(engine)
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": Trip.model_json_schema(), "strict": True}}
    if stream:
        s = await client.chat.completions.create(model="m", messages=ASK, response_format=fmt, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in s])
    else:
        r = await client.chat.completions.create(model="m", messages=ASK, response_format=fmt)
        assert r.choices[0].finish_reason == "stop"
        text = r.choices[0].message.content
    trip = Trip.model_validate_json(text)
    assert trip.stops and 2 <= trip.stops[0].nights <= 5


async def test_sdk_parse_helper_gets_the_model(engine, sdk) -> None:
    r = await sdk(engine).chat.completions.parse(model="m", messages=ASK, response_format=Trip)
    assert isinstance(r.choices[0].message.parsed, Trip)


async def test_json_object_answer_is_a_json_object(engine, sdk) -> None:
    r = await sdk(engine).chat.completions.create(model="m", messages=ASK, response_format={"type": "json_object"})
    assert isinstance(orjson.loads(r.choices[0].message.content), dict)


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": Stop.model_json_schema()},
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}
AFTER_TOOL = ASK + [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "found"},
]


@pytest.mark.parametrize(
    "choice,name",
    [("required", "get_weather"), ({"type": "function", "function": {"name": "search"}}, "search")],
    ids=["required", "named"],
)
@pytest.mark.parametrize("messages", [ASK, AFTER_TOOL], ids=["first-turn", "after-a-tool-result"])
async def test_required_or_named_tool_choice_always_calls_a_tool(engine, sdk, choice, name, messages) -> None:
    r = await sdk(engine).chat.completions.create(
        model="m", messages=messages, tools=[WEATHER, SEARCH], tool_choice=choice
    )
    assert r.choices[0].finish_reason == ("tool_calls" if choice == "required" else "stop")  # as vLLM ends them
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == name
    params = next(t for t in (WEATHER, SEARCH) if t["function"]["name"] == name)["function"]["parameters"]
    jsonschema.validate(orjson.loads(call.function.arguments), params)


async def test_auto_tool_choice_answers_a_tool_result_with_text(engine, sdk) -> None:
    r = await sdk(engine).chat.completions.create(model="m", messages=AFTER_TOOL, tools=[WEATHER, SEARCH])
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
