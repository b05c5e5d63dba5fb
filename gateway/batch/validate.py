"""Input files of the Batch API: JSONL, one request per line, checked line by line.

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": ..., ...}}

Each problem is located (1-based line number) with a code, as OpenAI reports them in a failed
batch's `errors.data[{code, message, line, param}]`. The upload checks the shape of every line
(JSON, custom_id unique, method, url, body, size); creating a batch checks the lines against the
batch (its endpoint, one model per file, a model the key may use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

# url of a line -> (pipeline endpoint, api): /v1/responses runs as a chat request of the Responses API.
ENDPOINTS: dict[str, tuple[str, str | None]] = {
    "/v1/chat/completions": ("chat", None),
    "/v1/completions": ("completions", None),
    "/v1/embeddings": ("embeddings", None),
    "/v1/responses": ("chat", "responses"),
}
MAX_PROBLEMS = 100  # problems listed at most (the count says how many there were)
MAX_CUSTOM_ID = 512


@dataclass(slots=True)
class Problem:
    line: int | None
    code: str
    message: str
    param: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line, "param": self.param}


@dataclass(slots=True)
class Request:
    line: int
    custom_id: str
    url: str
    model: str
    body: bytes  # the request body as the pipeline gets it
    grp: str  # prefix group: lines sharing a system prompt / instructions ("" = none)


def parse(content: bytes, max_lines: int, max_line_bytes: int) -> tuple[list[Request], list[Problem]]:
    """Every line's shape; problems in line order (at most MAX_PROBLEMS kept)."""
    requests: list[Request] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    count = 0
    for n, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        count += 1
        if count > max_lines:
            problems.append(Problem(None, "too_many_lines", f"The file has more than {max_lines} requests."))
            break
        if len(raw) > max_line_bytes:
            problems.append(Problem(n, "line_too_large", f"The line is larger than {max_line_bytes} bytes."))
            continue
        req = _line(n, raw, seen, problems)
        if req is not None:
            requests.append(req)
    if count == 0:
        problems.append(Problem(None, "empty_file", "The file holds no requests."))
    return requests, problems


def _line(n: int, raw: bytes, seen: set[str], problems: list[Problem]) -> Request | None:
    def bad(code: str, message: str, param: str | None = None) -> None:
        problems.append(Problem(n, code, message, param))

    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        bad("invalid_json", f"The line is not valid JSON: {e.msg}.")
        return None
    if not isinstance(obj, dict):
        bad("invalid_request", "The line must be a JSON object.")
        return None
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        bad("missing_custom_id", "Missing required parameter: 'custom_id' (a non-empty string).", "custom_id")
        return None
    if len(cid) > MAX_CUSTOM_ID:
        bad("invalid_custom_id", f"'custom_id' is longer than {MAX_CUSTOM_ID} characters.", "custom_id")
        return None
    if cid in seen:
        bad("duplicate_custom_id", f"The custom_id {cid[:64]!r} appears on an earlier line.", "custom_id")
        return None
    seen.add(cid)
    if obj.get("method") != "POST":
        bad("invalid_method", "'method' must be \"POST\".", "method")
        return None
    url = obj.get("url")
    if url not in ENDPOINTS:
        bad("invalid_url", f"'url' must be one of {', '.join(ENDPOINTS)}.", "url")
        return None
    body = obj.get("body")
    if not isinstance(body, dict):
        bad("invalid_body", "'body' must be a JSON object (the request).", "body")
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad("missing_model", "Missing required parameter: 'body.model'.", "body.model")
        return None
    if body.get("stream"):
        bad("invalid_stream", "Batch requests cannot be streamed; remove 'body.stream'.", "body.stream")
        return None
    return Request(n, cid, url, model, orjson.dumps(body), prefix_group(url, body))


def check_against(
    requests: list[Request],
    endpoint: str,
    known: Callable[[str], bool],
    may_use: Callable[[str], bool],
) -> list[Problem]:
    """The lines against the batch: every url is its endpoint, one model (known, allowed)."""
    problems: list[Problem] = []
    first = requests[0].model if requests else None
    for r in requests:
        if r.url != endpoint:
            problems.append(
                Problem(
                    r.line, "mismatched_url", f"The url {r.url} differs from the batch's endpoint {endpoint}.", "url"
                )
            )
        elif r.model != first:
            problems.append(
                Problem(
                    r.line,
                    "mismatched_model",
                    f"All requests of a batch must use the same model; this line uses {r.model[:64]!r}, "
                    f"the first {str(first)[:64]!r}.",
                    "body.model",
                )
            )
        elif not known(r.model):
            problems.append(
                Problem(r.line, "model_not_found", f"The model {r.model[:64]!r} does not exist.", "body.model")
            )
        elif not may_use(r.model):
            problems.append(
                Problem(r.line, "model_not_allowed", f"This API key may not use model {r.model[:64]!r}.", "body.model")
            )
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


def prefix_group(url: str, body: dict[str, Any]) -> str:
    """A short hash of what a line's prompt starts with (system / developer messages, the
    Responses `instructions`, or a completion prompt's first 512 characters): lines with the same
    group are claimed together and share a session id, so they land on one engine's prefix cache."""
    head: Any = None
    if url == "/v1/chat/completions":
        msgs = body.get("messages")
        if isinstance(msgs, list):
            head = [m for m in msgs[:4] if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    elif url == "/v1/responses":
        head = body.get("instructions")
    elif url == "/v1/completions":
        prompt = body.get("prompt")
        head = prompt[:512] if isinstance(prompt, str) else None
    if not head:
        return ""
    return blake2b(orjson.dumps(head), digest_size=8).hexdigest()


def summary(problems: list[Problem], shown: int = 10) -> str:
    """One message for a 400: the first `shown` problems with their line numbers."""
    parts = [f"line {p.line}: {p.message}" if p.line else p.message for p in problems[:shown]]
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return f"The file has {len(problems)} invalid line(s): " + "; ".join(parts) + more
