"""Config schemas of `[keystore]` (gateway/keystore.py) and `[tracing]` (gateway/tracing.py), apart
from gateway/config.py which imports them. Same rules: unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyStoreConfig(_Strict):
    """Where admin-created API keys live when no `[redis]` is configured."""

    path: str = Field("var/switchyard.db", description="SQLite file (created on the first key)")
    refresh_s: float = Field(2.0, gt=0, description="how often stored keys are re-read (other workers' changes)")


class TracingConfig(_Strict):
    """OpenTelemetry spans, one per request (needs `pip install 'switchyard[tracing]'`). Off by default."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint")
    service_name: str = "switchyard"
    sample_ratio: float = Field(1.0, ge=0, le=1)
