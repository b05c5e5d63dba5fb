"""The AIMD window of outstanding lines (gateway/batch/window.py)."""

from __future__ import annotations

from gateway.batch.window import Window


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_grows_while_lines_get_room_at_once_up_to_the_maximum() -> None:
    w = Window(4, 10, 0.5, Clock())
    for _ in range(3):
        w.answered(0.0)
    assert w.limit == 7
    for _ in range(10):
        w.answered(0.1)
    assert w.limit == 10


def test_shrinks_when_lines_wait_and_halves_when_refused_once_per_period() -> None:
    clock = Clock()
    w = Window(16, 64, 0.5, clock)
    w.answered(2.0)
    assert w.limit == 12
    w.answered(2.0)  # the same congestion seen again within the period: no second cut
    assert w.limit == 12
    clock.t = 1.0
    w.refused()
    assert w.limit == 6
    for _ in range(20):
        clock.t += 1.0
        w.refused()
    assert w.limit == 1  # never below one line
