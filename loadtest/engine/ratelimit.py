"""Remote-profile rate limits: requests and tokens per minute over a sliding 60 s window
of simulated time, answered like OpenAI (429, Retry-After, x-ratelimit-* headers)."""

from __future__ import annotations

import math
from collections import deque

from .faults import format_retry_after

WINDOW_S = 60.0


def _reset_text(seconds: float) -> str:
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    return f"{math.ceil(seconds)}s"


class Limited:
    """Why a request was refused and for how long (simulated seconds)."""

    def __init__(self, kind: str, limit: int, used: int, requested: int, wait_s: float) -> None:
        self.kind = kind  # "requests" | "tokens"
        self.limit = limit
        self.used = used
        self.requested = requested
        self.wait_s = wait_s

    def message(self, model: str) -> str:
        unit = "requests per min (RPM)" if self.kind == "requests" else "tokens per min (TPM)"
        return (
            f"Rate limit reached for {model} in organization org-sim on {unit}: "
            f"Limit {self.limit}, Used {self.used}, Requested {self.requested}. "
            f"Please try again in {self.wait_s:.3g}s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more."
        )

    def headers(self, time_scale: float) -> dict[str, str]:
        wall = max(self.wait_s / time_scale, 0.001)
        wall = math.ceil(wall * 1000) / 1000
        limit_key = "requests" if self.kind == "requests" else "tokens"
        return {
            "Retry-After": format_retry_after(wall),
            "retry-after-ms": str(math.ceil(wall * 1000)),
            f"x-ratelimit-limit-{limit_key}": str(self.limit),
            f"x-ratelimit-remaining-{limit_key}": str(max(0, self.limit - self.used)),
            f"x-ratelimit-reset-{limit_key}": _reset_text(wall),
        }


class RateLimiter:
    def __init__(self, rpm: int, tpm: int) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def reset(self) -> None:
        self._events.clear()
        self._tokens = 0

    def check(self, now: float, tokens: int) -> Limited | None:
        """Admit (and record) a request of `tokens` tokens at simulated time `now`, or refuse."""
        events = self._events
        while events and events[0][0] <= now - WINDOW_S:
            self._tokens -= events.popleft()[1]
        if self.rpm and len(events) >= self.rpm:
            return Limited("requests", self.rpm, len(events), 1, events[0][0] + WINDOW_S - now)
        if self.tpm and self._tokens + tokens > self.tpm:
            freed, wait = self.tpm - self._tokens, WINDOW_S
            for t, n in events:
                freed += n
                if freed >= tokens:
                    wait = t + WINDOW_S - now
                    break
            return Limited("tokens", self.tpm, self._tokens, tokens, wait)
        events.append((now, tokens))
        self._tokens += tokens
        return None
