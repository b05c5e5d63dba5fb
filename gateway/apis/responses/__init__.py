"""OpenAI Responses API over chat completions: request.py (request -> chat), response.py (chat ->
response object), stream.py (chat chunks -> response.* events), store.py (state for
previous_response_id, GET, DELETE), adapter.py (the ApiAdapter)."""

from gateway.apis.responses.adapter import ResponsesAdapter, ResponsesTranslated
from gateway.apis.responses.store import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponsesConfig,
    ResponseStore,
    SqliteResponseStore,
    StoredResponse,
    make_store,
)
from gateway.apis.responses.stream import ResponsesStream

__all__ = [
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "ResponsesAdapter",
    "ResponsesConfig",
    "ResponsesStream",
    "ResponsesTranslated",
    "SqliteResponseStore",
    "StoredResponse",
    "make_store",
]
