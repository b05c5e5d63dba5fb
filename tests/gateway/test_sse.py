"""SSE relay: byte-for-byte forwarding, usage capture, stripping only what the gateway added."""

from __future__ import annotations

import orjson
import pytest

from backends.base import UpstreamConnectError
from gateway.sse import SSERelay, usage_of_body


def chunk(content: str, **extra: object) -> bytes:
    obj = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}],
        **extra,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
USAGE_EVENT = (
    b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}) + b"\n\n"
)
DONE = b"data: [DONE]\n\n"


def relay_all(relay: SSERelay, pieces: list[bytes]) -> bytes:
    return b"".join(relay.feed(p) for p in pieces) + relay.flush()


def test_stream_without_usage_passes_through_byte_for_byte() -> None:
    stream = chunk("Hel") + chunk("lo") + DONE
    relay = SSERelay(strip_usage=False)
    assert relay_all(relay, [stream]) == stream
    assert relay.done and relay.usage is None


def test_split_anywhere_still_forwards_exact_bytes() -> None:
    stream = chunk("a") + chunk("b") + USAGE_EVENT + DONE
    for step in (1, 3, 7, 50):
        relay = SSERelay(strip_usage=False)
        pieces = [stream[i : i + step] for i in range(0, len(stream), step)]
        assert relay_all(relay, pieces) == stream
        assert relay.usage == USAGE


def test_injected_usage_chunk_is_captured_and_stripped() -> None:
    relay = SSERelay(strip_usage=True)
    out = relay_all(relay, [chunk("a") + chunk("b"), USAGE_EVENT[:20], USAGE_EVENT[20:] + DONE])
    assert out == chunk("a") + chunk("b") + DONE
    assert relay.usage == USAGE


def test_client_requested_usage_chunk_is_kept() -> None:
    relay = SSERelay(strip_usage=False)
    stream = chunk("a") + USAGE_EVENT + DONE
    assert relay_all(relay, [stream]) == stream and relay.usage == USAGE


def test_null_usage_fields_added_by_openai_are_removed_only_when_injected() -> None:
    with_null = chunk("a", usage=None)
    assert relay_all(SSERelay(strip_usage=True), [with_null]) == chunk("a")
    assert relay_all(SSERelay(strip_usage=False), [with_null]) == with_null


def test_usage_in_content_text_is_not_mistaken_for_usage() -> None:
    tricky = chunk('the "usage":{"prompt_tokens":1} field')
    relay = SSERelay(strip_usage=True)
    assert relay_all(relay, [tricky + DONE]) == tricky + DONE
    assert relay.usage is None


def test_crlf_framing_is_kept_exactly() -> None:
    stream = (
        chunk("a").replace(b"\n\n", b"\r\n\r\n") + USAGE_EVENT.replace(b"\n\n", b"\r\n\r\n") + b"data: [DONE]\r\n\r\n"
    )
    relay = SSERelay(strip_usage=True)
    assert relay_all(relay, [stream]) == chunk("a").replace(b"\n\n", b"\r\n\r\n") + b"data: [DONE]\r\n\r\n"
    assert relay.usage == USAGE


def test_unterminated_tail_is_flushed_and_stream_marked_incomplete() -> None:
    relay = SSERelay(strip_usage=False)
    assert relay.feed(chunk("a") + b'data: {"partial') == chunk("a")
    assert relay.flush() == b'data: {"partial'
    assert not relay.done


def test_usage_of_non_streamed_body() -> None:
    assert usage_of_body(orjson.dumps({"choices": [], "usage": USAGE})) == USAGE
    assert usage_of_body(b'{"choices": []}') is None and usage_of_body(b"not json usage") is None


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 3},
        {"prompt_tokens": "12", "completion_tokens": 3},
        {"prompt_tokens": 10**12, "completion_tokens": 3},
        {"prompt_tokens": 4, "completion_tokens": 2.5},
        {"prompt_tokens": 4, "completion_tokens": True},
        {"prompt_tokens": 4, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 9}},
    ],
)
def test_insane_usage_is_no_usage(usage) -> None:
    chunk = {"choices": [], "usage": usage}
    relay = SSERelay(strip_usage=False)
    relay.feed(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
    assert relay.usage is None
    assert usage_of_body(orjson.dumps({"choices": [], "usage": usage})) is None


def test_an_endless_event_is_refused_not_buffered() -> None:
    relay = SSERelay(strip_usage=False, max_event_bytes=1024)
    relay.feed(b"data: " + b"x" * 1000)
    with pytest.raises(UpstreamConnectError):
        relay.feed(b"y" * 100)
