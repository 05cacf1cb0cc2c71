"""An asyncio event loop in virtual time: single-threaded, and when nothing is ready the
clock jumps straight to the next timer. No sockets, no threads, no real waiting.

The node code (``ukehi.node``) is ordinary asyncio: its timers are ``asyncio.sleep`` and
``wait_for`` and its waiters are futures, so under this loop it runs unchanged, and the
order of every callback is decided by the (deterministic) ready queue and timer heap.

Speed: the stock ``BaseEventLoop`` keeps its timers in a heap of ``TimerHandle`` objects
whose ``__lt__`` is Python code (a third of the loop's cost in a profile of a seed), polls
a selector every iteration and nudges the clock by float subtraction. Here timers sit in
a heap of ``(when, sequence, handle)`` tuples (compared in C; equal times run in the
order they were set, which also pins the order independently of heap layout), and an
iteration with nothing ready sets the clock to the next timer exactly.
"""

from __future__ import annotations

import heapq
from asyncio import base_events, events
from typing import Any

__all__ = ["VirtualLoop", "Deadlock"]

_COMPACT_MIN = 256  # drop cancelled timers from the heap when there are this many and ...
_COMPACT_FRACTION = 0.5  # ... they are over half of it (as asyncio does)


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation can never move again."""


class _Selector:
    """Never polled (``_run_once`` is ours); ``BaseEventLoop.close`` still closes it."""

    def select(self, timeout: float | None) -> list[Any]:  # pragma: no cover - not called
        return []

    def close(self) -> None:
        pass

    def get_map(self) -> dict[Any, Any]:
        return {}


class VirtualLoop(base_events.BaseEventLoop):
    """``time()`` is virtual seconds since the loop was made."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _Selector()
        self._clock_resolution = 1e-9
        self._heap: list[tuple[float, int, events.TimerHandle]] = []
        self._seq = 0
        self._cancelled_timers = 0
        self.steps = 0

    def time(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> events.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        timer = events.TimerHandle(when, callback, args, self, context)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))
        timer._scheduled = True
        return timer

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> events.TimerHandle:
        return self.call_at(self._now + delay, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: Any) -> None:
        if handle._scheduled:
            self._cancelled_timers += 1

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _run_once(self) -> None:
        heap = self._heap
        ready = self._ready
        if self._cancelled_timers > _COMPACT_MIN and self._cancelled_timers > _COMPACT_FRACTION * len(heap):
            live = []
            for item in heap:
                if item[2]._cancelled:
                    item[2]._scheduled = False
                else:
                    live.append(item)
            heapq.heapify(live)
            self._heap = heap = live
            self._cancelled_timers = 0
        if not ready and not self._stopping:
            while heap and heap[0][2]._cancelled:
                heapq.heappop(heap)[2]._scheduled = False
                self._cancelled_timers -= 1
            if not heap:
                raise Deadlock("no callback is ready and no timer is pending")
            when = heap[0][0]
            if when > self._now:
                self._now = when  # the jump: nothing can happen before the next timer
        self.steps += 1
        end = self._now + self._clock_resolution
        while heap and heap[0][0] < end:
            handle = heapq.heappop(heap)[2]
            if handle._cancelled:
                self._cancelled_timers -= 1
            handle._scheduled = False
            ready.append(handle)
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()

    def run_until(self, until: float) -> None:
        """Run every callback due up to virtual time ``until``, then stop there."""
        done = self.create_future()
        handle = self.call_at(until, lambda: done.done() or done.set_result(None))
        try:
            self.run_until_complete(done)
        finally:
            handle.cancel()

    def close(self) -> None:
        for item in self._heap:
            item[2].cancel()
        self._heap.clear()
        super().close()

