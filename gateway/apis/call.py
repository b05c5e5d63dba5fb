"""One request of another API (Responses, Anthropic Messages) on its way through the gateway.

The request runs as a chat request: the pipeline puts the translated chat payload in the context,
so limits, caches, routing, retries and breakers work on it unchanged. What differs is decided here,
per deployment, at the three points where the API matters:

- where it may go (`narrow`, read by gateway/routing.py ModelRoute.pick): a follow-up of a response
  a backend's own API made goes back to that deployment while it can take requests; a request only
  a backend's own API can take (the translation refused it) goes only to such deployments;
- what is sent (`upstream`, read by gateway/attempt.py): a deployment that serves the API natively
  (`backends[].native_apis`) gets the client's own body (only `model` changed, the same bytes when
  the names agree) at the API's path, with the client's version / beta headers; any other gets the
  translated chat body at /chat/completions;
- how the answer goes back (`native(deployment)`, read by gateway/api_forward.py): relayed as is, or
  translated.

After the answer went out, `settle` keeps the state: the translated conversation (Responses
`store`), or for a pass-through Responses answer the record that routes its follow-ups back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from gateway.apis.base import ApiAdapter, Translated
from gateway.apis.native import NativeAnswer
from gateway.apis.responses.response import assistant_of_output

if TYPE_CHECKING:
    from backends.deployment import Deployment

CHAT_PATH = "/chat/completions"
# Client headers a backend's own API reads (sent on pass-through only; never the client's key).
NATIVE_HEADERS = {"messages": ("anthropic-version", "anthropic-beta"), "responses": ("openai-beta",)}


class ApiCall:
    __slots__ = (
        "adapter",
        "tr",
        "payload",
        "body",
        "owner",
        "headers",
        "_path",
        "_chat_bodies",
        "answered",
        "native_answer",
    )

    def __init__(
        self,
        adapter: ApiAdapter,
        tr: Translated,
        payload: dict[str, Any],
        body: bytes,
        owner: str | None,
        client_headers: Mapping[str, str],
    ) -> None:
        self.adapter, self.tr, self.payload, self.body, self.owner = adapter, tr, payload, body, owner
        names = NATIVE_HEADERS.get(adapter.name, ())
        self.headers = {n: client_headers[n] for n in names if n in client_headers} or None
        self._path = adapter.native_path.removeprefix("/v1")  # backend URLs end with /v1
        self._chat_bodies: dict[str, bytes] = {}  # upstream model -> the translated body (retries, hedges)
        self.answered = False  # a forwarder wrote the answer in the API's shape (gateway/api_forward.py)
        self.native_answer: NativeAnswer | None = None  # set when a pass-through answer was delivered

    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def error(self) -> Any:
        return getattr(self.tr, "error", None)

    def native(self, d: Deployment) -> bool:
        """Does this request go to `d` in the API's own wire format?"""
        if self.name not in d.backend.native_apis or not getattr(self.tr, "native_allowed", True):
            return False
        pin = getattr(self.tr, "pin", None)
        return pin is None or pin == d.name

    def narrow(self, candidates: Sequence[Deployment]) -> Sequence[Deployment]:
        """The candidates this request may go to (a routing hint over the filters' result)."""
        pin = getattr(self.tr, "pin", None)
        if pin is not None:
            pinned = [d for d in candidates if d.name == pin]
            if pinned:
                return pinned  # the backend holding the previous response
        if self.error is not None:
            return [d for d in candidates if self.native(d)]
        return candidates

    def upstream(self, d: Deployment) -> tuple[str, bytes, bool, Mapping[str, str] | None]:
        """(path, body, usage injected, extra headers) of the attempt on `d` (gateway/attempt.py)."""
        if self.native(d):
            if d.upstream_model == self.tr.model:
                return self._path, self.body, False, self.headers
            return self._path, orjson.dumps({**self.payload, "model": d.upstream_model}), False, self.headers
        if self.error is not None:
            raise self.error  # only a backend's own API takes it, and `d` has none (narrow avoids this)
        body = self._chat_bodies.get(d.upstream_model)
        if body is None:
            chat = {**self.tr.chat_payload, "model": d.upstream_model}
            if chat.get("stream") and not d.backend.config.stream_usage:
                chat.pop("stream_options", None)  # the engine refuses it; usage then comes from nowhere
            body = self._chat_bodies[d.upstream_model] = orjson.dumps(chat)
        return CHAT_PATH, body, False, None

    async def settle(self, deployment: Deployment | None) -> None:
        """After the answer went out: keep the Responses state (nothing for Messages)."""
        answer = self.native_answer
        if answer is None:
            await self.tr.settle(deployment=deployment.name if deployment is not None else None)
            return
        remember = getattr(self.adapter, "remember_native", None)
        rid = answer.response_id
        if remember is None or rid is None or not answer.done or deployment is None:
            return
        if self.payload.get("store") is False:
            return
        reply = assistant_of_output(answer.response.get("output") if answer.response else None)
        conversation = [*getattr(self.tr, "conversation", ()), reply]
        await remember(rid, self.owner, deployment.name, answer.response, conversation)
