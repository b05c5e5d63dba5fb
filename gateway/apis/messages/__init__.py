"""Anthropic Messages API over chat completions: request.py (request -> chat), response.py (chat ->
message), stream.py (chat chunks -> message events), errors.py (error shape, rate-limit headers),
adapter.py (the ApiAdapter, count_tokens)."""

from gateway.apis.messages.adapter import MessagesAdapter, MessagesTranslated, count_tokens
from gateway.apis.messages.errors import anthropic_headers, error_json, error_type
from gateway.apis.messages.request import ToolNames
from gateway.apis.messages.stream import MessagesStream

__all__ = [
    "MessagesAdapter",
    "MessagesStream",
    "MessagesTranslated",
    "ToolNames",
    "anthropic_headers",
    "count_tokens",
    "error_json",
    "error_type",
]
