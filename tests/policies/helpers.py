"""Real Deployment objects on (unstarted) backends, and request contexts, for policy tests."""

from __future__ import annotations

from typing import Any

from backends.deployment import Deployment
from backends.load_signals import FLAVOURS, Load, LoadSignal
from backends.openai_compat import OpenAICompatBackend
from gateway.config import BackendConfig, Timeouts
from gateway.context import RequestContext


def deployment(name: str, local: bool = True, kind: str = "vllm", max_concurrency: int | None = None) -> Deployment:
    cfg = BackendConfig(name=name, kind=kind, url="http://127.0.0.1:9/v1", max_concurrency=max_concurrency)
    return Deployment(OpenAICompatBackend(cfg, Timeouts(), local), "m")


def with_reading(d: Deployment, load: Load, clock: Any = None) -> LoadSignal:
    """Give `d`'s engine a fresh /metrics reading."""
    signal = LoadSignal(FLAVOURS["vllm"], "http://x/metrics", 3.0, **({"clock": clock} if clock else {}))
    signal.update(load, d.backend.active)
    d.backend.load_signal = signal
    return signal


def ctx(session: str | None = None, messages: list[dict[str, Any]] | None = None, tools: Any = None) -> RequestContext:
    payload: dict[str, Any] = {"model": "m", "messages": messages or [{"role": "user", "content": "hi"}]}
    if tools is not None:
        payload["tools"] = tools
    return RequestContext(request_id="r", endpoint="chat", started=0.0, payload=payload, model="m", session_id=session)
