"""Config schema of `[keystore]` (gateway/keystore.py), apart from gateway/config.py which imports it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KeyStoreConfig(BaseModel):
    """Where admin-created API keys live when no `[redis]` is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field("var/switchyard.db", description="SQLite file (created on the first key)")
    refresh_s: float = Field(2.0, gt=0, description="how often stored keys are re-read (other workers' changes)")
