"""What the gateway holds of an upstream's answer (issue 15): one SSE event (every stream reader:
the chat relay, the native pass-through reader) and a whole non-streamed body are bounded; the end
of a stream is read even when its last event lacks its blank line."""

from __future__ import annotations

import pytest

from backends.base import UpstreamConnectError, UpstreamTooLarge, read_bounded
from gateway.apis.native import NativeAnswer
from gateway.sse import SSERelay


class Content:
    """An aiohttp StreamReader's readany(), from a list of chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.read = 0

    async def readany(self) -> bytes:
        chunk = self.chunks.pop(0) if self.chunks else b""
        self.read += len(chunk)
        return chunk


async def test_read_bounded_holds_at_most_the_limit() -> None:
    assert await read_bounded(Content([b"ab", b"cd"]), None, 4) == b"abcd"
    with pytest.raises(UpstreamTooLarge):
        await read_bounded(Content([b"ab", b"cd", b"e"]), None, 4)
    content = Content([b"x" * 10])
    with pytest.raises(UpstreamTooLarge):  # a declared length over the limit: nothing read at all
        await read_bounded(content, 10**9, 4)
    assert content.read == 0
    assert issubclass(UpstreamTooLarge, UpstreamConnectError)


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_native_stream_events_are_bounded(api: str) -> None:
    answer = NativeAnswer(api, max_event_bytes=1024)
    answer.feed(b"event: x\ndata: " + b"x" * 1000)
    with pytest.raises(UpstreamConnectError):
        answer.feed(b"y" * 100)


def test_a_native_last_event_without_its_blank_line_still_ends_the_answer() -> None:
    answer = NativeAnswer("messages")
    assert answer.feed(b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n')
    assert answer.feed(b'event: message_stop\ndata: {"type":"message_stop"}') == b""
    assert not answer.done
    assert answer.flush() == b'event: message_stop\ndata: {"type":"message_stop"}\n\n' and answer.done
    cut = NativeAnswer("messages")
    cut.feed(b'event: content_block_delta\ndata: {"type":"content_blo')
    cut.flush()
    assert not cut.done and not cut.failed


def test_a_chat_tail_is_the_end_only_with_done() -> None:
    relay = SSERelay(strip_usage=False)
    relay.feed(b'data: {"choices":[]}\n\ndata: [DONE]')
    assert not relay.done
    assert relay.flush() == b"data: [DONE]" and relay.done
