"""Config schema of `backends[].limits`: a remote API's own quota, enforced per deployment
(gateway/limits/deployment_quota.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.limits.config import Strict


class DeploymentQuotaConfig(Strict):
    """Token buckets for EACH deployment (backend/model) of the backend: remote APIs count their
    limits per model (OpenAI: per organization and model), so two models on one backend get a
    bucket each, and one deployment shared by two aliases shares its bucket."""

    requests_per_minute: float | None = Field(None, gt=0, description="requests the upstream accepts per minute")
    tokens_per_minute: float | None = Field(None, gt=0, description="prompt + completion tokens per minute")
    burst: float | None = Field(None, gt=0, description="bucket size as a multiple of one minute's rate; default 1")

    @model_validator(mode="after")
    def _some_limit(self) -> "DeploymentQuotaConfig":
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("set at least one of requests_per_minute, tokens_per_minute")
        return self
