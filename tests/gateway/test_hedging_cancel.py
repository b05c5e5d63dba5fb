"""gateway/hedging.py: a client that leaves while the losing copy is still being cancelled cancels
the request. The loser is awaited in a `finally` so its slot and breaker are settled; a
cancellation of the request that arrives during that wait used to be swallowed there with the
loser's own, and the request went on with the winner's answer for nobody."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import hedging
from gateway.attempt import Outcome


class FakeAttempt:
    """An attempt whose send answers after `answer_s`; cancelled, it takes `close_s` to let go (an
    upstream connection being closed)."""

    def __init__(self, ctx: Any, gw: Any, route: Any, deployment: Any, charge: Any = None) -> None:
        self.ctx, self.deployment = ctx, deployment
        self.answer_s, self.close_s = deployment.answer_s, deployment.close_s
        self.ended: Outcome | None = None

    async def send(self, ttfb_s: float) -> "FakeAttempt":
        try:
            await asyncio.sleep(self.answer_s)
        except asyncio.CancelledError:
            await asyncio.sleep(self.close_s)
            raise
        return self

    def abandon(self) -> None:
        pass

    def end(self, outcome: Outcome) -> None:
        self.ended = outcome


def deployment(name: str, answer_s: float, close_s: float) -> Any:
    return SimpleNamespace(name=name, answer_s=answer_s, close_s=close_s, hedge_lost=lambda: "neutral")


async def test_a_client_gone_while_the_loser_is_cancelled_cancels_the_request(monkeypatch) -> None:
    monkeypatch.setattr(hedging, "Attempt", FakeAttempt)
    slow, fast = deployment("slow", 60.0, 0.3), deployment("fast", 0.05, 0.0)
    ctx = SimpleNamespace(attempts=1)
    gw = SimpleNamespace(
        resilience=SimpleNamespace(budget=SimpleNamespace(try_spend=lambda: True)),
        metrics=SimpleNamespace(count=lambda *a: None, hedges=None),
    )
    pick = SimpleNamespace(route=SimpleNamespace(alias="chat"), deployment=fast, charge=None)

    async def next_pick(untried_only: bool) -> Any:
        return pick

    candidates = SimpleNamespace(peek=lambda: (None, fast), next=next_pick)
    first = FakeAttempt(ctx, gw, pick.route, slow)
    first.route = pick.route  # type: ignore[attr-defined]
    settings = SimpleNamespace(ttfb_s=60.0, hedge_after_s=0.05)

    request = asyncio.create_task(hedging.hedged(gw, candidates, first, settings))
    await asyncio.sleep(0.2)  # the hedge has won; the slow copy is being closed (0.3 s)
    assert not request.done()
    request.cancel()  # the client leaves now
    with pytest.raises(asyncio.CancelledError):
        await request
    assert first.ended is Outcome.NEUTRAL  # the loser was still settled
