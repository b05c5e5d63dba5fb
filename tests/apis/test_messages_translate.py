"""Anthropic Messages request -> chat payload, chat -> message / events, headers (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateway.apis.messages import MessagesAdapter, anthropic_headers, count_tokens
from gateway.apis.messages.errors import parse_duration
from gateway.apis.messages.request import to_chat
from gateway.errors import GatewayError

LONG = "mcp__a_very_long_server_name_for_testing__and_an_even_longer_tool_name_x"  # > 64 chars


def _tool(name: str) -> dict:
    return {
        "name": name,
        "description": f"The {name} tool",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }


CLAUDE_CODE = {  # the shape Claude Code sends
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Working dir: /repo", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>todo list empty</system-reminder>"},
                {"type": "text", "text": "fix the tests", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": "EqQBCkgIBxABGAI..."},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3..."},
                {"type": "text", "text": "Reading files."},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "/repo/a.py"}},
                {"type": "tool_use", "id": "toolu_02", "name": LONG, "input": {"path": "/repo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "     1\tprint(1)"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "permission denied"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    ],
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "keep going"},
            ],
        },
    ],
    "tools": [_tool(n) for n in ("Bash", "Read", "Edit", "Write", "Glob", "Grep", "TodoWrite", "WebFetch", LONG)],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 10000},
    "metadata": {"user_id": "user_abc_account_x_session_y"},
    "temperature": 1,
    "stream": True,
}


def test_claude_code_request() -> None:
    req = to_chat(CLAUDE_CODE)
    p = req.payload
    msgs = p["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert msgs[0] == {"role": "system", "content": "You are Claude Code.\n\nWorking dir: /repo"}
    assert msgs[1] == {"role": "user", "content": "<system-reminder>todo list empty</system-reminder>\nfix the tests"}
    alias = req.names.chat(LONG)
    assert len(alias) <= 64 and alias != LONG and req.names.client(alias) == LONG
    assert msgs[2] == {
        "role": "assistant",
        "content": "Reading files.",
        "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "Read", "arguments": '{"path":"/repo/a.py"}'}},
            {"id": "toolu_02", "type": "function", "function": {"name": alias, "arguments": '{"path":"/repo"}'}},
        ],
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "     1\tprint(1)"}
    assert msgs[4] == {"role": "tool", "tool_call_id": "toolu_02", "content": "Error: permission denied"}
    assert msgs[5]["content"] == [  # the tool_result's image, then the turn's text
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "text", "text": "keep going"},
    ]
    assert [t["function"]["name"] for t in p["tools"]][-1] == alias and len(p["tools"]) == 9
    assert p["tools"][0]["function"]["parameters"] == CLAUDE_CODE["tools"][0]["input_schema"]
    assert (p["tool_choice"], p["user"], p["temperature"], p["max_tokens"]) == (
        "auto",
        CLAUDE_CODE["metadata"]["user_id"],
        1,
        32000,
    )
    for dropped in ("thinking", "system", "metadata", "stop_sequences"):
        assert dropped not in p
    assert p["stream_options"] == {"include_usage": True}


async def test_aliased_tool_name_maps_back() -> None:
    tr = await MessagesAdapter().parse(CLAUDE_CODE, {}, None)
    alias = tr.chat_payload["tools"][-1]["function"]["name"]
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": alias, "arguments": '{"path": "x"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}},
    }
    msg = orjson.loads(tr.body(orjson.dumps(chat), 200))
    assert msg["content"] == [{"type": "tool_use", "id": "c", "name": LONG, "input": {"path": "x"}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 40,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    st = tr.stream_translator()
    start = st.start()
    assert b"event: message_start" in start and b"event: ping" in start
    out = st.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": alias, "arguments": ""}}]},
                }
            ]
        }
    )
    assert LONG.encode() in out


def test_invalid_tool_arguments_kept_raw() -> None:
    chat = {
        "choices": [
            {
                "message": {"content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}]},
                "finish_reason": "tool_calls",
            }
        ]
    }
    from gateway.apis.messages.response import from_chat

    msg = from_chat(chat, "msg_1", "m", lambda n: n, [])
    assert msg["content"][0]["input"] == {"_raw_arguments": "[1"}


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
            "tool_result",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
                ]
            },
            "base64 or url",
        ),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "built-in"),
        ({"tools": [{"name": "x"}]}, "input_schema"),
        ({"tool_choice": {"type": "maybe"}, "tools": [_tool("a")]}, "tool_choice"),
        ({"system": [{"type": "image"}]}, "system"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)
def test_bad_requests(patch: dict, match: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], **patch}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(GatewayError, match=match) as e:
        to_chat(body)
    assert e.value.status == 400


def test_stream_events_and_late_fragment() -> None:
    from gateway.apis.messages.stream import MessagesStream

    st = MessagesStream("msg_x", "m", 12, lambda n: n, ["STOP"])
    st.start()
    ch = lambda d, f=None, **kw: {"choices": [{"index": 0, "delta": d, "finish_reason": f, **kw}]}  # noqa: E731
    a = st.feed(ch({"content": "hi"}))
    assert a.count(b"event: content_block_start") == 1 and b'"text_delta"' in a
    b = st.feed(ch({"tool_calls": [{"index": 0, "id": "t0", "function": {"name": "f", "arguments": '{"a"'}}]}))
    assert b.startswith(b"event: content_block_stop") and b'"index":1' in b and b"input_json_delta" in b
    st.feed(ch({"tool_calls": [{"index": 1, "id": "t1", "function": {"name": "g", "arguments": "{}"}}]}))
    late = st.feed(ch({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    assert late == b"" and st.tool_calls()[0] == '{"a":1}'
    st.feed(ch({}, "stop", stop_reason="STOP"))
    st.feed({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    end = st.finish()
    events = [orjson.loads(line[6:]) for line in end.split(b"\n") if line.startswith(b"data: ")]
    assert [e["type"] for e in events] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}
    assert events[1]["usage"] == {"output_tokens": 4, "input_tokens": 9, "cache_read_input_tokens": 0}
    err = orjson.loads(st.fail("broken").split(b"data: ")[1])
    assert err == {"type": "error", "error": {"type": "api_error", "message": "broken"}}


def test_rate_limit_headers() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    h = anthropic_headers(
        {
            "Retry-After": "3",
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1m30s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "10",
            "x-ratelimit-reset-tokens": "250ms",
        },
        now=now,
    )
    assert h["retry-after"] == "3" and "Retry-After" not in h
    assert h["anthropic-ratelimit-requests-limit"] == "60" and h["anthropic-ratelimit-requests-remaining"] == "0"
    assert h["anthropic-ratelimit-requests-reset"] == "2025-01-01T12:01:30Z"
    assert h["anthropic-ratelimit-tokens-reset"] == "2025-01-01T12:00:01Z"
    assert h["x-ratelimit-limit-tokens"] == "1000"  # the gateway's own headers stay
    assert [parse_duration(s) for s in ("20ms", "1.5s", "6m0s", "1h2m3s", "bad")] == [0.02, 1.5, 360, 3723, None]


def test_count_tokens_estimate() -> None:
    small = count_tokens({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    big = count_tokens(CLAUDE_CODE)
    assert 0 < small < big
    body = orjson.loads(MessagesAdapter().count_tokens({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    assert body == {"input_tokens": small}


def test_unknown_blocks_dropped_search_results_as_text() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q"},
                    {"type": "search_result", "title": "T", "source": "s", "content": [{"type": "text", "text": "r"}]},
                    {"type": "web_search_tool_result", "content": []},
                    {"type": "brand_new_block"},
                ],
            }
        ],
    }
    assert to_chat(body).payload["messages"] == [{"role": "user", "content": "q\nT\ns\nr"}]
