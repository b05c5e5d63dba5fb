"""The Responses API adapter (`POST /v1/responses`, `GET` / `DELETE /v1/responses/{id}`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.apis.base import chat_error, estimate_payload, new_id
from gateway.apis.responses.request import to_chat
from gateway.apis.responses.response import from_chat, skeleton
from gateway.apis.responses.store import MemoryResponseStore, ResponseStore, StoredResponse
from gateway.apis.responses.stream import ResponsesStream
from gateway.errors import GatewayError, bad_request


def not_found(resp_id: str) -> GatewayError:
    return GatewayError(
        404, f"Response with id '{resp_id}' not found.", type="invalid_request_error", code=None, param="response_id"
    )


def _is_openai_error(body: bytes) -> bool:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("error"), dict) and isinstance(obj["error"].get("message"), str)


class ResponsesTranslated:
    def __init__(
        self,
        adapter: ResponsesAdapter,
        owner: str | None,
        model: str,
        stream: bool,
        chat_payload: dict[str, Any],
        conversation: list[dict[str, Any]],
        echo: dict[str, Any],
    ) -> None:
        self._adapter, self._owner = adapter, owner
        self.model, self.stream = model, stream
        self.chat_payload = chat_payload
        self.conversation = conversation
        self.response_id = new_id("resp_")
        self.response = skeleton(self.response_id, model, echo)
        self.store = bool(echo.get("store", True))
        self.usage: dict[str, Any] | None = None
        self._answer: dict[str, Any] | None = None  # the assistant chat message, once whole
        self._stream: ResponsesStream | None = None
        # Pass-through (gateway/apis/call.py): the deployment holding `previous_response_id` when a
        # backend's own API made it; False when the previous response was translated here (no
        # backend knows its id, so this one is translated too); the translation's refusal, when only
        # a backend's own API can take the request.
        self.pin: str | None = None
        self.native_allowed = True
        self.error: GatewayError | None = None

    def stream_translator(self) -> ResponsesStream:
        self._stream = ResponsesStream(self.response)
        return self._stream

    def body(self, chat_body: bytes, status: int) -> bytes:
        if status >= 400:  # chat errors are already OpenAI-shaped: passed as they are when they parse
            if _is_openai_error(chat_body):
                return chat_body
            message, code, param = chat_error(chat_body)
            kind = "server_error" if status >= 500 else "invalid_request_error"
            return self._adapter.error_body(GatewayError(status, message, type=kind, code=code, param=param))[0]
        try:
            chat = orjson.loads(chat_body)
        except orjson.JSONDecodeError:
            chat = None
        if not isinstance(chat, dict):
            return self._adapter.error_body(
                GatewayError(502, "The upstream answer is not JSON.", type="upstream_error")
            )[0]
        self.usage = chat.get("usage") if isinstance(chat.get("usage"), dict) else None
        resp, self._answer = from_chat(chat, self.response)
        return orjson.dumps(resp)

    async def settle(self, deployment: str | None = None) -> None:
        """Save the conversation (after the answer went out whole; nothing when store is false)."""
        if self._stream is not None:
            if not self._stream.finished:
                return
            self.usage = self._stream.usage
            self._answer = self._stream.assistant_message()
        if not self.store or self._answer is None or self._owner is None or self._adapter.store is None:
            return
        record = StoredResponse(
            self.response_id,
            self._owner,
            time.time(),
            deployment,
            self.response,
            [*self.conversation, self._answer],
        )
        await self._adapter.store.put(record)


class ResponsesAdapter:
    name = "responses"
    native_path = "/v1/responses"

    def __init__(self, store: ResponseStore | None = None) -> None:
        self.store: ResponseStore | None = store if store is not None else MemoryResponseStore()

    async def parse(
        self, payload: dict[str, Any], headers: Mapping[str, str], owner: str | None, native_ok: bool = False
    ) -> ResponsesTranslated:
        """`native_ok`: some deployment of the model serves the Responses API itself, so a request the
        translation refuses (a built-in tool, an item_reference ...) is kept (`error` set) for those."""
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("You must provide a model parameter.", param="model", code="missing_model")
        history, pin, chained = None, None, False
        prev = payload.get("previous_response_id")
        if prev is not None:
            if not isinstance(prev, str) or not prev:
                raise bad_request("'previous_response_id' must be a string.", param="previous_response_id")
            record = await self.lookup(prev, owner)
            if record is None:
                raise GatewayError(
                    400,
                    f"Previous response with id '{prev}' not found.",
                    type="invalid_request_error",
                    code="previous_response_not_found",
                    param="previous_response_id",
                )
            history, chained = record.conversation, not record.native
            pin = record.deployment if record.native else None
        stream = payload.get("stream", False)
        if stream not in (True, False, None):
            raise bad_request("'stream' must be a boolean.", param="stream")
        try:
            req = to_chat(payload, history)
        except GatewayError as e:
            if not native_ok or chained or e.status != 400:
                raise
            echo = {"store": payload.get("store", True) is not False}
            tr = ResponsesTranslated(self, owner, model, bool(stream), estimate_payload(payload), history or [], echo)
            tr.error = e
        else:
            tr = ResponsesTranslated(self, owner, model, bool(stream), req.payload, req.conversation, req.echo)
        tr.pin, tr.native_allowed = pin, not chained
        return tr

    async def lookup(self, resp_id: str, owner: str | None) -> StoredResponse | None:
        """The stored record, or None (unknown, expired, or another owner's)."""
        if self.store is None or owner is None:
            return None
        return await self.store.get(resp_id, owner)

    async def get(self, resp_id: str, owner: str | None) -> bytes:
        """Body of GET /v1/responses/{id}; raises 404 for an unknown id or another owner's."""
        record = await self.lookup(resp_id, owner)
        if record is None:
            raise not_found(resp_id)
        return orjson.dumps(record.response)

    async def delete(self, resp_id: str, owner: str | None) -> bytes:
        """Body of DELETE /v1/responses/{id}; raises 404 like get."""
        if self.store is None or owner is None or not await self.store.delete(resp_id, owner):
            raise not_found(resp_id)
        return orjson.dumps({"id": resp_id, "object": "response.deleted", "deleted": True})

    async def deployment_of(self, resp_id: str, owner: str | None) -> str | None:
        """The deployment that served a stored response (pass-through affinity), if known."""
        record = await self.lookup(resp_id, owner)
        return record.deployment if record is not None else None

    async def remember_native(
        self,
        resp_id: str,
        owner: str | None,
        deployment: str,
        response: dict[str, Any] | None = None,
        conversation: list[dict[str, Any]] | None = None,
    ) -> None:
        """Pass-through mode: note that a backend's own Responses API made `resp_id` (its id, from the
        answer's `id` / the `response.created` event), so a follow-up is routed there (`deployment_of`)
        and GET/DELETE ownership still holds. `conversation`: the history as chat messages (this input
        and the answer), so a follow-up is translated from it if that backend is gone. Nothing is kept
        when there is no owner or store."""
        if self.store is None or owner is None:
            return
        record = StoredResponse(
            resp_id, owner, time.time(), deployment, response or {"id": resp_id}, conversation or [], True
        )
        await self.store.put(record)

    def error_body(self, err: GatewayError) -> tuple[bytes, dict[str, str]]:
        return err.body(), dict(err.headers)

    def rate_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return dict(headers)
