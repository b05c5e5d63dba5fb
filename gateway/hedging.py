"""Hedging (`models[].hedge_after_s`): when the first attempt has no first byte after that delay, a
copy goes to another deployment; the first copy to get its first byte wins and the other is
cancelled (its upstream connection closed, so the engine frees the slot).

A copy that loses with no first byte tells its breaker `Deployment.hedge_lost()`: neutral the first
time since the deployment's last success, a failure from the second in a row, so a hung engine that
hedging hides from clients still trips its breaker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.attempt import Attempt, Outcome

if TYPE_CHECKING:
    from gateway.resilience import ModelSettings
    from gateway.runtime import Gateway
    from gateway.selection import Candidates


async def hedged(gw: "Gateway", candidates: "Candidates", first: Attempt, settings: "ModelSettings") -> Attempt:
    """`first`'s answer, or a hedge's if that one reaches its first byte sooner. Raises the
    AttemptFailed of the last copy to fail when both fail."""
    ctx = first.ctx
    tasks: dict[asyncio.Future[Attempt], Attempt] = {asyncio.ensure_future(first.send(settings.ttfb_s)): first}
    decided = False
    try:
        done, _ = await asyncio.wait(tasks, timeout=settings.hedge_after_s)
        if done:
            return done.pop().result()
        found = candidates.peek()
        if found is None or found[1] is first.deployment or not gw.resilience.budget.try_spend():
            return await next(iter(tasks))
        pick = await candidates.next(untried_only=True)
        if pick is None:  # over its quota: no hedge
            return await next(iter(tasks))
        ctx.attempts += 1
        second = Attempt(ctx, gw, pick.route, pick.deployment, pick.charge)
        tasks[asyncio.ensure_future(second.send(settings.ttfb_s))] = second
        error: BaseException | None = None
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    decided = True  # the copy still pending lost: its cancellation is a hedge loss
                    winner = "primary" if tasks[task] is first else "hedge"
                    gw.metrics.count(gw.metrics.hedges, first.route.alias, winner)
                    for other in done - {task}:  # finished in the same instant: it lost
                        _lost(tasks[other], Outcome.NEUTRAL)
                    return task.result()
                error = task.exception()
        assert error is not None
        raise error
    finally:
        me = asyncio.current_task()
        cancels = me.cancelling() if me is not None else 0
        for task, attempt in tasks.items():
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:  # the loser's own end; a cancellation of this request is counted
                    pass
                _lost(attempt, Outcome(attempt.deployment.hedge_lost()) if decided else Outcome.NEUTRAL)
        if me is not None and me.cancelling() > cancels:  # the client left while a loser let go
            raise asyncio.CancelledError


def _lost(attempt: Attempt, outcome: Outcome) -> None:
    attempt.abandon()
    attempt.end(outcome)
