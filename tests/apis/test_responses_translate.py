"""Responses API request -> chat payload, and chat -> response object / events (no network)."""

from __future__ import annotations

import orjson
import pytest

from gateway.apis.responses import ResponsesAdapter
from gateway.apis.responses.request import to_chat
from gateway.errors import GatewayError

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command and returns its output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"}},
        "required": ["command"],
        "additionalProperties": False,
    },
}

CODEX = {  # the shape Codex CLI sends: store false, reasoning items, encrypted reasoning, function items
    "model": "gpt-5-codex",
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the failing test"}]},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Look at files"}],
            "content": None,
            "encrypted_content": "gAAAAABo...",
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
            "call_id": "call_1",
        },
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": '{"output":"a.py\\n","metadata":{"exit_code":0}}',
        },
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAAABp..."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Found a.py."}]},
        {"type": "function_call", "name": "shell", "arguments": '{"command":["cat","a.py"]}', "call_id": "call_2"},
        {"type": "function_call", "name": "shell", "arguments": '{"command":["pytest"]}', "call_id": "call_3"},
        {"type": "function_call_output", "call_id": "call_2", "output": "print(1)"},
        {"type": "function_call_output", "call_id": "call_3", "output": [{"type": "input_text", "text": "1 failed"}]},
    ],
    "tools": [SHELL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "3f2c-session",
    "text": {"verbosity": "medium"},
}


def test_codex_request() -> None:
    req = to_chat(CODEX, None)
    p = req.payload
    assert [m["role"] for m in p["messages"]] == [
        "system",
        "user",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "tool",
    ]
    assert p["messages"][0] == {"role": "system", "content": "You are Codex, a coding agent."}
    assert p["messages"][3]["tool_calls"][0]["id"] == "call_1" and p["messages"][3]["content"] is None
    merged = p["messages"][5]
    assert merged["content"] == "Found a.py." and [c["id"] for c in merged["tool_calls"]] == ["call_2", "call_3"]
    assert p["messages"][7] == {"role": "tool", "tool_call_id": "call_3", "content": "1 failed"}
    assert p["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "parameters": SHELL["parameters"],
                "description": SHELL["description"],
                "strict": False,
            },
        }
    ]
    assert (p["tool_choice"], p["parallel_tool_calls"], p["reasoning_effort"], p["verbosity"]) == (
        "auto",
        False,
        "medium",
        "medium",
    )
    assert p["stream"] is True and p["stream_options"] == {"include_usage": True}
    for dropped in ("include", "prompt_cache_key", "store", "instructions", "input", "reasoning", "text"):
        assert dropped not in p
    assert req.conversation == p["messages"][1:] and req.echo["store"] is False


def test_formats_and_choices() -> None:
    base = {"model": "m", "input": "x", "tools": [SHELL]}
    p = to_chat({**base, "text": {"format": {"type": "json_object"}}}, None).payload
    assert p["response_format"] == {"type": "json_object"}
    p = to_chat({**base, "text": {"format": {"type": "text"}}}, None).payload
    assert "response_format" not in p
    p = to_chat({**base, "tool_choice": {"type": "function", "name": "shell"}}, None).payload
    assert p["tool_choice"] == {"type": "function", "function": {"name": "shell"}}
    other = {**SHELL, "name": "other"}
    p = to_chat(
        {
            **base,
            "tools": [SHELL, other],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "other"}],
            },
        },
        None,
    ).payload
    assert p["tool_choice"] == "required" and [t["function"]["name"] for t in p["tools"]] == ["other"]
    p = to_chat(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "see"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                    ],
                }
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u",
            "metadata": {"a": "b"},
        },
        None,
    ).payload
    assert p["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
    }
    assert (p["temperature"], p["top_p"], p["user"]) == (0.2, 0.9, "u") and "metadata" not in p


@pytest.mark.parametrize(
    "body,match",
    [
        ({"model": "m"}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "file_search"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input_file",
        ),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"model": "m", "input": 5}, "input"),
    ],
)
def test_bad_requests(body: dict, match: str) -> None:
    with pytest.raises(GatewayError, match=match) as e:
        to_chat(body, None)
    assert e.value.status == 400


async def test_body_and_settle_store_conversation() -> None:
    adapter = ResponsesAdapter()
    tr = await adapter.parse({"model": "m", "input": "hi", "instructions": "sys"}, {}, "t\x1fk")
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "calling",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 2}},
    }
    body = orjson.loads(tr.body(orjson.dumps(chat), 200))
    assert [o["type"] for o in body["output"]] == ["message", "function_call"]
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2 and body["instructions"] == "sys"
    assert tr.usage == chat["usage"]
    await tr.settle("e0/up")
    rec = await adapter.store.get(tr.response_id, "t\x1fk")
    assert rec is not None and rec.deployment == "e0/up"
    assert rec.conversation == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    assert await adapter.deployment_of(tr.response_id, "t\x1fk") == "e0/up"
    assert await adapter.deployment_of(tr.response_id, "t\x1fother") is None


async def test_error_body_translation() -> None:
    tr = await ResponsesAdapter().parse({"model": "m", "input": "hi"}, {}, None)
    err = orjson.dumps({"error": {"message": "too many", "type": "rate_limit", "code": "rate_limit_exceeded"}})
    out = orjson.loads(tr.body(err, 429))
    assert out["error"]["message"] == "too many" and out["error"]["code"] == "rate_limit_exceeded"


async def test_stream_late_fragment_and_interleaving() -> None:
    tr = await ResponsesAdapter().parse({"model": "m", "input": "hi", "stream": True}, {}, "o")
    st = tr.stream_translator()
    st.start()

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    st.feed(chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}))
    st.feed(chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}))
    late = st.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    assert b'"output_index":0' in late
    st.feed(chunk({"content": "after"}, "stop"))
    st.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    st.finish()
    out = st.response["output"]
    assert [(o["type"], o.get("arguments")) for o in out] == [
        ("function_call", '{"x":1}'),
        ("function_call", "{}"),
        ("message", None),
    ]
    assert out[2]["content"][0]["text"] == "after" and st.response["usage"]["total_tokens"] == 3
    await tr.settle()
    assert st.assistant_message()["tool_calls"][0]["function"]["arguments"] == '{"x":1}'


async def test_native_records_route_follow_ups() -> None:
    adapter = ResponsesAdapter()
    await adapter.remember_native("resp_native1", "t\x1fk", "e1/native-model")
    assert await adapter.deployment_of("resp_native1", "t\x1fk") == "e1/native-model"
    assert await adapter.deployment_of("resp_native1", "t\x1fz") is None
    tr = await adapter.parse({"model": "m", "input": "x", "previous_response_id": "resp_native1"}, {}, "t\x1fk")
    assert tr.pin == "e1/native-model" and tr.native_allowed  # back to the backend holding it
    with pytest.raises(GatewayError, match="not found") as e:  # another key's: unknown
        await adapter.parse({"model": "m", "input": "x", "previous_response_id": "resp_native1"}, {}, "t\x1fz")
    assert e.value.status == 400


def test_unknown_items_and_parts_dropped() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "reasoning", "encrypted_content": "gAAA", "summary": []},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "new_part", "x": 1}]},
        ],
    }
    assert to_chat(body, None).payload["messages"] == [{"role": "user", "content": "hi"}]


async def test_error_chunk_mid_stream_fails_both_apis() -> None:
    from gateway.apis.messages import MessagesAdapter

    err = {"error": {"message": "engine died", "type": "server_error"}}
    tr = await ResponsesAdapter().parse({"model": "m", "input": "x", "stream": True}, {}, "o")
    st = tr.stream_translator()
    out = st.feed(err)
    assert b"response.failed" in out and b"engine died" in out and st.failed
    mt = await MessagesAdapter().parse(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}, {}, None
    )
    ms = mt.stream_translator()
    out = ms.feed(err)
    assert out.startswith(b"event: error\n") and b"engine died" in out and ms.failed


async def test_upstream_openai_error_passes_through() -> None:
    tr = await ResponsesAdapter().parse({"model": "m", "input": "x"}, {}, None)
    raw = orjson.dumps(
        {"error": {"message": "ctx too long", "type": "invalid_request_error", "code": None, "param": None}}
    )
    assert tr.body(raw, 400) == raw
    wrapped = orjson.loads(tr.body(b"Bad Gateway", 502))
    assert wrapped["error"]["message"] == "Bad Gateway" and wrapped["error"]["type"] == "server_error"
