"""Active health probes: every backend is probed on an interval and marked up or down.

A backend that is down at startup does not stop the gateway: it is simply marked down and rejoins
when a later probe succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from backends.base import Backend


class HealthProber:
    def __init__(
        self,
        backends: Sequence[Backend],
        interval_s: float,
        on_change: Callable[[Backend, bool], None] | None = None,
    ) -> None:
        self._backends = list(backends)
        self._interval = interval_s
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # completed probe rounds; readiness needs at least one

    async def probe_all(self) -> None:
        results = await asyncio.gather(*(b.probe() for b in self._backends))
        for backend, ok in zip(self._backends, results):
            changed = backend.healthy != ok
            backend.healthy = ok
            if self._on_change is not None:
                self._on_change(backend, changed)
        self.rounds += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="switchyard-health-prober")

    async def _loop(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
