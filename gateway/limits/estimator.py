"""The request's token estimate, made once and shared: the limits phase (TPM buckets, budget
reservation), deployment quotas and the admission queue all read `ctx.estimate`.

prompt: tiktoken count of what the upstream will read (gateway/limits/estimate.py); allowance: the
output tokens to reserve: per answer max_tokens / max_completion_tokens (else
`limits.default_max_tokens`), times the answers generated (n, every prompt of a completions list).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.limits import estimate

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.context import RequestContext

LARGE_PROMPT_BYTES = 32_000  # count bigger prompts in an executor, off the event loop


@dataclass(slots=True, frozen=True)
class TokenEstimate:
    prompt: int  # every prompt token the upstream reads
    allowance: int  # output tokens reserved: per_answer x answers
    longest: int = 0  # the longest single prompt (a completions list is prefilled prompt by prompt)
    per_answer: int = 0  # output tokens one answer may have
    answers: int = 1  # answers generated: chat n, completions prompts x n (or best_of)

    @property
    def total(self) -> int:
        return self.prompt + self.allowance


class Estimator:
    def __init__(self, config: "Config") -> None:
        self.default_max_tokens = config.limits.default_max_tokens if config.limits else 4096
        self.counters: dict[str, estimate.Counter] = {}

    async def start(self, aliases: list[str]) -> list[str]:
        """Load the tokenizers the aliases need (blocking: in an executor); returns the encodings
        that fell back to the byte estimate."""
        names = {estimate.encoding_for(a) for a in aliases}
        self.counters = await asyncio.get_running_loop().run_in_executor(None, estimate.load_counters, names)
        return sorted(names - set(self.counters))

    def counter(self, model: str) -> estimate.Counter:
        return self.counters.get(estimate.encoding_for(model), estimate.bytes_counter)

    async def of(self, ctx: "RequestContext") -> TokenEstimate:
        if ctx.estimate is None:
            prompt, longest = await self.prompt_parts(ctx)
            n = estimate.answers(ctx.endpoint, ctx.payload)
            requested = estimate.requested_output(ctx.endpoint, ctx.payload)
            per_answer = (self.default_max_tokens if requested is None else requested) if n else 0
            ctx.estimate = TokenEstimate(prompt, per_answer * n, longest, per_answer, n)
        return ctx.estimate

    async def prompt_parts(self, ctx: "RequestContext") -> tuple[int, int]:
        count = self.counter(ctx.model)
        if len(ctx.body) > LARGE_PROMPT_BYTES:
            return await asyncio.get_running_loop().run_in_executor(
                None, estimate.prompt_parts, ctx.endpoint, ctx.payload, count, ctx.model
            )
        return estimate.prompt_parts(ctx.endpoint, ctx.payload, count, ctx.model)

    async def prompt_tokens(self, ctx: "RequestContext") -> int:
        return (await self.prompt_parts(ctx))[0]
