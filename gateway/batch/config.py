"""Config schema of `[batch]`: the OpenAI Batch API (gateway/batch/). Unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchConfig(_Strict):
    enabled: bool = Field(True, description="serve /v1/files and /v1/batches and run batches")
    store: str = Field(
        "sqlite:///var/switchyard-batch.db",
        description="where files, batches and per-line progress live: sqlite:///<path>, shared by the "
        "gateway processes of one machine (a relative path is relative to the working directory); or "
        "redis: the [redis] connection, keys under its key_prefix + 'batch:', shared by gateways on any machine",
    )
    max_file_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest upload (413 past it)")
    max_lines: int = Field(50_000, gt=0, description="most requests in one input file")
    max_line_bytes: int = Field(1024 * 1024, gt=0, description="largest single request line")
    completion_windows: dict[str, float] = Field(
        {"24h": 86400.0}, description="completion_window values accepted, and their length in seconds"
    )
    lease_s: float = Field(
        30.0, gt=0, description="a claimed line's lease; renewed while it runs, taken over by another worker after it"
    )
    poll_s: float = Field(0.5, gt=0, description="how often the runner looks for batches and expired leases")
    initial_window: int = Field(4, gt=0, description="lines outstanding per batch at first (AIMD grows it)")
    max_window: int = Field(256, gt=0, description="most lines outstanding per batch (waiting or running)")
    target_wait_s: float = Field(
        0.5, gt=0, description="a line that waited longer than this in the admission queue shrinks the window"
    )
    retry_after_s: float = Field(1.0, gt=0, description="pause of a line refused for lack of room before its retry")
    spill: Literal["never", "remote"] = Field(
        "never",
        description="remote: when the observed rate cannot finish the batch within its window on local "
        "engines, remaining lines also go to the model's remote (non-local) deployments",
    )
    spill_margin: float = Field(
        0.8, gt=0, le=1, description="spill when the estimated finish is past this share of the time left"
    )

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        if v != "redis" and (not v.startswith("sqlite:///") or len(v) <= len("sqlite:///")):
            raise ValueError('must be sqlite:///<path> (e.g. sqlite:///var/switchyard-batch.db) or "redis"')
        return v
