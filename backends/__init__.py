"""Backends: how the gateway talks to engines and providers, registered by config `kind`.

Every OpenAI-compatible engine or API is served by the raw pass-through backend. A new backend is
one new file plus one line in BACKEND_KINDS: (module, class name, local by default?). Modules are
imported lazily, so a kind whose library is heavy (litellm) costs nothing unless configured.
"""

from __future__ import annotations

import importlib
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
}


def backend_class(kind: str) -> type["Backend"]:
    module, cls, _ = BACKEND_KINDS[kind]
    return getattr(importlib.import_module(module), cls)


def is_local_kind(kind: str) -> bool:
    return BACKEND_KINDS[kind][2]
