"""Other APIs served over chat completions (issue #14): the OpenAI Responses API and Anthropic's
Messages API. See README.md here; base.py is the seam the request path uses."""

from __future__ import annotations

from typing import Any

from gateway.apis.base import ApiAdapter, StreamTranslator, Translated, owner_of
from gateway.apis.messages import MessagesAdapter
from gateway.apis.responses import ResponsesAdapter, ResponsesConfig, make_store

__all__ = [
    "ApiAdapter",
    "MessagesAdapter",
    "ResponsesAdapter",
    "ResponsesConfig",
    "StreamTranslator",
    "Translated",
    "build_adapters",
    "owner_of",
]


def build_adapters(
    config: ResponsesConfig | None = None, redis: Any = None, count: Any = None
) -> dict[str, ApiAdapter]:
    """One adapter per API name, for the Gateway to own (nothing global). `count`: a token counter
    (gateway/limits/estimate.py) for the Messages estimates; default 4 bytes per token."""
    messages = MessagesAdapter(count) if count is not None else MessagesAdapter()
    return {"responses": ResponsesAdapter(make_store(config, redis)), "messages": messages}
