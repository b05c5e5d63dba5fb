"""Fixtures for the Responses / Messages API tests through the whole gateway (issue #14): a scripted
chat-completions engine (answers queued by the test), the simulated native Responses / Messages
server over it (loadtest/native_apis.py), and a gateway in front of either."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.keys import hash_key
from gateway.server import RunningGateway
from loadtest.native_apis import NativeApis, start_native_apis
from tests.apis import conftest as apis_conftest
from tests.apis.conftest import ScriptedChat
from tests.conftest import BACKEND_KEY, KEY_ALL, KEY_CHAT

scripted = apis_conftest.scripted  # the scripted chat engine fixture of tests/apis, shared

KEY_OTHER_TEAM = KEY_CHAT  # team "ops"
KEY_SAME_TEAM = "sk-test-research-second"  # team "research", another key


def api_config(urls: list[str], native: list[bool] | None = None, **server: Any) -> dict[str, Any]:
    """Model "m" on one backend per URL (upstream model "up-m"); `native[i]`: backend i serves the
    Responses and Messages APIs itself (pass-through)."""
    native = native or [False] * len(urls)
    return {
        "server": {"host": "127.0.0.1", "port": 0, "health_check_interval_s": 0.2, **server},
        "backends": [
            {
                "name": f"b{i}",
                "kind": "vllm",
                "url": url,
                "api_key": BACKEND_KEY,
                "native_apis": ["responses", "messages"] if nat else [],
            }
            for i, (url, nat) in enumerate(zip(urls, native))
        ],
        "models": [{"name": "m", "deployments": [{"backend": f"b{i}", "model": "up-m"} for i in range(len(urls))]}],
        "teams": [{"name": "research"}, {"name": "ops"}],
        "keys": [
            {"name": "research-agents", "team": "research", "sha256": hash_key(KEY_ALL)},
            {"name": "research-second", "team": "research", "sha256": hash_key(KEY_SAME_TEAM)},
            {"name": "ops-bot", "team": "ops", "sha256": hash_key(KEY_OTHER_TEAM)},
        ],
    }


@dataclass
class ApiSetup:
    mode: str  # "translated" | "native"
    gw: RunningGateway
    chat: ScriptedChat  # the chat engine behind (directly, or behind the native server)
    native: NativeApis | None

    @property
    def is_native(self) -> bool:
        return self.native is not None


@pytest.fixture
async def native_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[NativeApis] = []

    async def make(chat_url: str, **options: Any) -> NativeApis:
        n = await start_native_apis(chat_url, **options)
        started.append(n)
        return n

    yield make
    for n in started:
        await n.stop()


@pytest.fixture(params=["translated", "native"])
async def api(
    request: pytest.FixtureRequest, scripted: ScriptedChat, native_factory: Any, gateway_factory: Any
) -> ApiSetup:
    """A gateway whose one backend translates (the scripted chat engine) or serves the APIs itself
    (the native server over that engine)."""
    if request.param == "translated":
        return ApiSetup("translated", await gateway_factory(api_config([scripted.url])), scripted, None)
    n = await native_factory(scripted.url)
    gw = await gateway_factory(api_config([n.url + "/v1"], [True]))
    return ApiSetup("native", gw, scripted, n)
