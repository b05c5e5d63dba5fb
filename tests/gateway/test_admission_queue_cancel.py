"""A request cancelled (its client gone) in the instant its queue wait is granted must leave with the
cancellation, giving the slot back: it must not go on to the engine and hold a GPU slot for an answer
nobody reads. Python 3.11's asyncio.wait_for returned the result and dropped the cancellation when
the awaited future was already done at that moment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from gateway.admission.config import AdmissionConfig
from gateway.admission.metrics import AdmissionMetrics
from gateway.admission.queue import AdmissionQueue, Grant
from gateway.admission.service import MemoryService
from gateway.context import RequestContext
from gateway.logs import get_logger
from gateway.metrics import Metrics


@dataclass(eq=False)
class Slot:
    """A deployment with `free` slots: what the queue asks of one."""

    name: str = "d0"
    free: int = 0
    taken: int = 0
    preemptible: dict = field(default_factory=dict)  # no Batch API lines running here

    def acquire(self) -> None:
        self.free -= 1
        self.taken += 1

    def release(self) -> None:
        self.free += 1
        self.taken -= 1


@dataclass
class Route:
    alias: str
    deployments: list[Slot] = field(default_factory=list)


@dataclass
class OneRoute:
    """Candidates of one alias: the deployment when it has a free slot."""

    route: Route

    @property
    def routes(self) -> list[Route]:
        return [self.route]

    def peek(self) -> tuple[Route, Slot] | None:
        d = self.route.deployments[0]
        return (self.route, d) if d.free > 0 else None


@pytest.mark.parametrize("turns", range(6))
async def test_cancelled_in_the_instant_of_its_grant_the_request_leaves_and_gives_the_slot_back(turns: int) -> None:
    cfg = AdmissionConfig()
    queue = AdmissionQueue(cfg, AdmissionMetrics(Metrics()), MemoryService(cfg.fairness), get_logger("switchyard"))
    slot = Slot()
    candidates = OneRoute(Route("chat", [slot]))
    ctx = RequestContext(request_id="r1", endpoint="chat", started=0.0, model="chat")
    waiting = asyncio.ensure_future(queue.wait(ctx, candidates, "s1"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert queue.count == 1
    slot.free = 1
    queue.pump()  # granted: the slot is taken for the waiter
    assert slot.taken == 1
    for _ in range(turns):  # the client goes away 0..5 loop turns after the grant
        await asyncio.sleep(0)
    if waiting.done():  # the wait ended before the client left: the grant is the request's
        assert isinstance(waiting.result(), Grant) and slot.taken == 1
        return
    waiting.cancel()
    try:
        got = await waiting
    except asyncio.CancelledError:
        got = None
    assert got is None, f"the cancelled request kept its grant ({got!r}) and would go on to the engine"
    assert slot.taken == 0 and slot.free == 1, "the granted slot was not given back"
    assert queue.count == 0
