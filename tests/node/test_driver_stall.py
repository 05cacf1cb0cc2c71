"""The driver ages the leader's lease by the tick intervals a stall swallowed (a stopped process,
a blocked event loop), before the core sees any input queued during the stall."""

from __future__ import annotations

import io

from ukehi.node.driver import Driver
from ukehi.nodelog import NodeLogger


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class _Core:
    """Only what feed_inputs touches with no inputs queued: ticks and stalls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def tick(self) -> None:
        self.calls.append(("tick", 1))

    def stalled(self, ticks: int) -> None:
        self.calls.append(("stalled", ticks))


def _driver() -> tuple[Driver, _Clock, _Core]:
    clock = _Clock()
    d = Driver("n1", bug=None, fsync=True, founders={}, log=NodeLogger("n1", "info", io.StringIO()),
               clock=clock, wake=lambda: None)
    d.tick_s = 0.1
    core = _Core()
    d.core = core  # type: ignore[assignment]
    return d, clock, core


def test_regular_ticks_age_nothing_extra():
    d, clock, core = _driver()
    for _ in range(5):
        d.tick()
        d.feed_inputs()
        clock.now += 0.1
    assert core.calls == [("tick", 1)] * 5


def test_a_stall_is_counted_before_the_late_tick_arrives():
    d, clock, core = _driver()
    d.tick()
    d.feed_inputs()
    clock.now += 2.05  # stopped for 2 s: 20 ticks' worth, and no tick has come yet
    d.feed_inputs()  # e.g. a read queued while stopped runs before the tick timer's callback
    assert core.calls == [("tick", 1), ("stalled", 20)]
    d.tick()  # the late tick: not counted twice
    d.feed_inputs()
    assert core.calls == [("tick", 1), ("stalled", 20), ("tick", 1)]


def test_ticks_dropped_while_the_ready_loop_lagged_still_age_the_lease():
    d, clock, core = _driver()
    for _ in range(7):  # the timer ticks on time, the Ready loop does not run meanwhile
        clock.now += 0.1
        d.tick()
    d.feed_inputs()
    assert core.calls == [("stalled", 4)] + [("tick", 1)] * 3  # 3 delivered, 4 dropped but counted
