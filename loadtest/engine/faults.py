"""Fault injection: what to break, for which requests, how often."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any

FAULT_KINDS = ("status", "hang", "drop", "delay")
# Endpoints a fault applies to when `paths` is not given.
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass
class Fault:
    # "status": answer `status` with an error body at once.
    # "hang": accept the request and never send a byte (until the client goes away).
    # "drop": close the TCP connection abruptly after `after_chunks` SSE events of a
    #         streaming answer, or half-way through the body of a non-streaming one.
    # "delay": wait `delay_s` (simulated seconds) before answering normally.
    kind: str = "status"
    status: int = 500
    # Sent as the Retry-After header (integer text when whole) with "status" faults.
    retry_after: float | None = None
    # Custom error message for "status" faults.
    body: str | None = None
    after_chunks: int = 0
    delay_s: float = 0.0
    # Apply to the next `count` matching requests, then clear; None = until cleared.
    count: int | None = None
    # Chance that a matching request is hit (seeded RNG).
    probability: float = 1.0
    # Endpoints hit (exact paths; a trailing "*" matches a prefix). None = INFERENCE_PATHS.
    paths: list[str] | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.paths is not None:
            self.paths = tuple(self.paths)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault | None:
        """Build from the JSON of POST /sim/fault; {"kind": null} means no fault."""
        if not data or data.get("kind") is None:
            return None
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["paths"] is not None:
            out["paths"] = list(out["paths"])
        return out

    def matches(self, path: str) -> bool:
        for p in self.paths or INFERENCE_PATHS:
            if p == path or (p.endswith("*") and path.startswith(p[:-1])):
                return True
        return False


def format_retry_after(seconds: float) -> str:
    """Retry-After text: integer seconds when whole, else the shortest float text."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return repr(round(float(seconds), 3))


class FaultInjector:
    """Holds the current fault; decides (seeded) whether a request is hit."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed ^ 0x5EED_FA17)
        self.fault: Fault | None = None
        self.fired = 0

    def set(self, fault: Fault | None) -> None:
        # A private copy: `count` is consumed here, never on the caller's object.
        self.fault = replace(fault) if fault is not None else None

    def clear(self) -> None:
        self.fault = None

    def pick(self, path: str) -> Fault | None:
        """The fault to apply to this request, or None. Consumes one `count` when it fires."""
        fault = self.fault
        if fault is None or not fault.matches(path):
            return None
        if fault.probability < 1.0 and self._rng.random() >= fault.probability:
            return None
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                self.fault = None
        self.fired += 1
        return fault
