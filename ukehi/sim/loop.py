"""An asyncio event loop in virtual time: single-threaded, and when nothing is ready the
clock jumps straight to the next timer. No sockets, no threads, no real waiting.

The node code (``ukehi.node``) is ordinary asyncio: its timers are ``asyncio.sleep`` and
``wait_for`` and its waiters are futures, so under this loop it runs unchanged, and the
order of every callback is decided by the (deterministic) ready queue and timer heap.
"""

from __future__ import annotations

import asyncio
from asyncio import base_events
from typing import Any

__all__ = ["VirtualLoop", "Deadlock"]


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulation can never move again."""


class _Selector:
    def __init__(self, loop: "VirtualLoop") -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock("no callback is ready and no timer is pending")
        if timeout > 0:
            self._loop._advance(timeout)
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
        self._selector = _Selector(self)
        self._clock_resolution = 1e-9
        self.steps = 0

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float) -> None:
        self._now += seconds
        if self._scheduled:
            # Land exactly on the next timer (no float drift leaves it a hair in the future).
            when = self._scheduled[0]._when
            if when > self._now and when - self._now < 1e-7:
                self._now = when

    def _process_events(self, event_list: list[Any]) -> None:
        self.steps += 1

    def _write_to_self(self) -> None:
        pass

    def run_until(self, until: float) -> None:
        """Run every callback due up to virtual time ``until``, then stop there."""
        done = self.create_future()
        handle = self.call_at(until, lambda: done.done() or done.set_result(None))
        try:
            self.run_until_complete(done)
        finally:
            handle.cancel()


