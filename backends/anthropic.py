"""Anthropic's API (`kind = "anthropic"`, url `https://api.anthropic.com/v1`).

The raw pass-through backend with Anthropic's credentials: `x-api-key` and `anthropic-version`
instead of a Bearer token. `/v1/messages` is served natively (NATIVE_APIS: a Messages request is
passed through byte for byte, with the client's `anthropic-beta` header); chat completions and
translated Responses requests go to Anthropic's OpenAI-SDK compatible `/v1/chat/completions`.
"""

from __future__ import annotations

from backends.openai_compat import OpenAICompatBackend

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicBackend(OpenAICompatBackend):
    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        return headers
