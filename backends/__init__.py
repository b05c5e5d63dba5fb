"""Backends: how the gateway talks to engines and providers, registered by config `kind`.

Every OpenAI-compatible engine or API is served by the raw pass-through backend. A new backend is
one new file plus one line in BACKEND_KINDS: (module, class name, local by default?). Modules are
imported lazily, so a kind whose library is heavy (litellm) costs nothing unless configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.base import Backend

_PASS_THROUGH = ("backends.openai_compat", "OpenAICompatBackend")

# kind -> (module, class, local GPU engine by default)
BACKEND_KINDS: dict[str, tuple[str, str, bool]] = {
    "vllm": (*_PASS_THROUGH, True),
    "sglang": (*_PASS_THROUGH, True),
    "tgi": (*_PASS_THROUGH, True),
    "llamacpp": (*_PASS_THROUGH, True),
    "candle": (*_PASS_THROUGH, True),
    "mistralrs": (*_PASS_THROUGH, True),
    "tei": (*_PASS_THROUGH, True),
    "openai": (*_PASS_THROUGH, False),
    "openai-compatible": (*_PASS_THROUGH, False),
    "litellm": ("backends.litellm_backend", "LiteLLMBackend", False),
    # Anthropic's API: /v1/messages natively (pass-through), chat completions through its OpenAI-SDK
    # compatible endpoint; x-api-key + anthropic-version instead of a Bearer token.
    "anthropic": ("backends.anthropic", "AnthropicBackend", False),
}

# The client APIs besides chat completions (gateway/apis) a kind serves natively by default, so a
# request of that API is passed through byte for byte instead of translated to chat completions.
# `backends[].native_apis` overrides it per backend (recent vLLM and SGLang serve /v1/responses,
# vLLM /v1/messages too: opt in there, the engine version decides).
NATIVE_APIS: dict[str, tuple[str, ...]] = {
    "openai": ("responses",),
    "anthropic": ("messages",),
}


def backend_class(kind: str) -> type["Backend"]:
    module, cls, _ = BACKEND_KINDS[kind]
    return getattr(importlib.import_module(module), cls)


def is_local_kind(kind: str) -> bool:
    return BACKEND_KINDS[kind][2]


def native_apis_of(kind: str, configured: Sequence[str] | None) -> frozenset[str]:
    return frozenset(NATIVE_APIS.get(kind, ()) if configured is None else configured)
