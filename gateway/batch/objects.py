"""The Batch API's wire shapes: file and batch objects, and the lines of output and error files
(OpenAI's: `{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}`; a line that never ran has `response: null` and `error: {code, message}`)."""

from __future__ import annotations

import secrets
from hashlib import blake2b
from typing import Any

import orjson

from gateway.batch.store import TIMESTAMPS


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def output_file_id(batch_id: str, kind: str) -> str:
    """Deterministic, so finalizing twice (two workers, or after a crash) writes the same file."""
    return f"file-{kind}-{batch_id.removeprefix('batch_')}"


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def batch_object(row: dict[str, Any]) -> dict[str, Any]:
    obj = row["obj"]
    out: dict[str, Any] = {
        "id": row["id"],
        "object": "batch",
        "endpoint": obj["endpoint"],
        "model": row["model"] or None,
        "errors": obj.get("errors"),
        "input_file_id": obj["input_file_id"],
        "completion_window": obj["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
        "usage": {
            "input_tokens": row["prompt_tokens"],
            "output_tokens": row["completion_tokens"],
            "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        "metadata": obj.get("metadata"),
    }
    for t in TIMESTAMPS:
        out[t] = row[t]
    return out


def request_line_id(batch_id: str, custom_id: str) -> str:
    return "batch_req_" + blake2b(f"{batch_id}\0{custom_id}".encode(), digest_size=12).hexdigest()


def answer_line(batch_id: str, custom_id: str, status: int, request_id: str, body: bytes) -> bytes:
    """An answered line (any status: errors of the upstream or the gateway go to the error file
    in this same shape)."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = {"error": {"message": body[:2000].decode("utf-8", "replace"), "type": "upstream_error"}}
    return orjson.dumps(
        {
            "id": request_line_id(batch_id, custom_id),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": parsed},
            "error": None,
        }
    )


def unrun_line(batch_id: str, custom_id: str, code: str, message: str) -> bytes:
    """A line that never ran (batch_expired, batch_cancelled)."""
    return orjson.dumps(
        {
            "id": request_line_id(batch_id, custom_id),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )
