"""How many lines of a batch are outstanding at once (claimed and handed to the pipeline): AIMD.

The admission queue does the real yielding (batch lines wait there as class `background`, behind
every interactive and batch-class request, and get a slot only when a deployment has room and no
better request waits). The window only keeps that backlog small, so 10,000 lines never sit in the
queue (its count bound would shed interactive-adjacent work first, and a cancelled batch would leave
thousands of waiters): one more line for each line admitted within `target_wait_s` (room was
there), a cut by a quarter when lines wait longer, by half when one is refused (shed, queue
timeout, no deployment); at most one cut per `target_wait_s`, so a backlog draining is not read as
many congestion signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Window:
    def __init__(
        self, initial: int, maximum: int, target_wait_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.value = float(min(initial, maximum))
        self.maximum = maximum
        self.target = target_wait_s
        self.clock = clock
        self._cut_at = -1e18

    @property
    def limit(self) -> int:
        return max(1, int(self.value))

    def answered(self, waited_s: float) -> None:
        if waited_s <= self.target:
            self.value = min(float(self.maximum), self.value + 1.0)
        else:
            self._cut(0.75)

    def refused(self) -> None:
        self._cut(0.5)

    def _cut(self, factor: float) -> None:
        now = self.clock()
        if now - self._cut_at < self.target:
            return
        self._cut_at = now
        self.value = max(1.0, self.value * factor)
