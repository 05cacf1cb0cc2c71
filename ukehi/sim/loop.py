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
iteration with nothing ready sets the clock to the next timer exactly. Every event of a
seed (each message hop, timer, task step) makes a handle and runs one, so handles are made
without asyncio's debug bookkeeping (this loop never runs in debug mode) and run inline;
``run_forever`` runs its iterations in one frame (``_iterate``, the same steps in the same
order as ``_run_once`` one at a time), and ``get_debug``, which every future and task made
in C calls, is a C callable.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import sys
import threading
from asyncio import base_events, events
from asyncio import all_tasks as _all_tasks
from typing import Any

_copy_context = contextvars.copy_context
_heappush = heapq.heappush
_heappop = heapq.heappop

__all__ = ["VirtualLoop", "Deadlock", "EventBudgetExceeded"]

_COMPACT_MIN = 256  # drop cancelled timers from the heap when there are this many and ...
_COMPACT_FRACTION = 0.5  # ... they are over half of it (as asyncio does)


def tasks_of(loop: "VirtualLoop") -> set[Any]:
    """The loop's unfinished tasks (``asyncio.all_tasks`` works from outside a running loop
    when given the loop)."""
    return _all_tasks(loop)


class _Handle(events.Handle):
    """``asyncio.Handle`` without the debug-mode check (a method call per handle): sets what
    ``asyncio.Handle.__init__`` sets, inline (this loop never runs in debug mode)."""

    __slots__ = ()

    def __init__(self, callback: Any, args: tuple[Any, ...], loop: Any, context: Any = None) -> None:
        self._context = _copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


class _TimerHandle(events.TimerHandle):
    __slots__ = ()

    def __init__(self, when: float, callback: Any, args: tuple[Any, ...], loop: Any, context: Any = None) -> None:
        # As _Handle, plus the timer fields (one timer per message hop and per sleep).
        self._context = _copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None
        self._when = when
        self._scheduled = True


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation can never move again."""


class EventBudgetExceeded(RuntimeError):
    """The seed ran more loop iterations than its budget: a livelock (two nodes exchanging
    messages without end) or a runaway workload. Counted in iterations, not wall time, so the
    same seed stops at the same point on every machine."""


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
        self.max_steps: int | None = None  # EventBudgetExceeded past this many iterations

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        # Every future and task made in C asks its loop ``get_debug()`` (a Python method:
        # a frame per sleep, wait and request); a C callable with the same answer instead.
        self.get_debug = bool if not self._debug else functools.partial(bool, True)  # type: ignore[method-assign]

    def time(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> events.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        timer = _TimerHandle(when, callback, args, self, context)
        seq = self._seq = self._seq + 1
        _heappush(self._heap, (when, seq, timer))
        return timer

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> events.TimerHandle:
        # call_at inlined (asyncio.sleep and every node timer come through here).
        if self._closed:
            raise RuntimeError("Event loop is closed")
        when = self._now + delay
        timer = _TimerHandle(when, callback, args, self, context)
        seq = self._seq = self._seq + 1
        _heappush(self._heap, (when, seq, timer))
        return timer

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> events.Handle:
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def _call_soon(self, callback: Any, args: tuple[Any, ...], context: Any) -> events.Handle:
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def _timer_handle_cancelled(self, handle: Any) -> None:
        if handle._scheduled:
            self._cancelled_timers += 1

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def run_forever(self) -> None:
        """As ``BaseEventLoop.run_forever``, with the iterations in one frame (``_iterate``):
        the same iterations in the same order, without a method call and a dozen attribute
        look-ups per iteration (a seed runs tens of thousands)."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._iterate(False)
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def _run_once(self) -> None:
        self._iterate(True)

    def _compact(self) -> None:
        """Drop cancelled timers from the heap, in place (``_iterate`` holds the list)."""
        heap = self._heap
        live = []
        for item in heap:
            if item[2]._cancelled:
                item[2]._scheduled = False
            else:
                live.append(item)
        heap[:] = live
        heapq.heapify(heap)  # (when, sequence) keys are unique: the pop order is the layout's own
        self._cancelled_timers = 0

    def _iterate(self, once: bool) -> None:
        """Loop iterations until ``stop()`` (or one, with ``once``). One iteration: when
        nothing is ready, jump the clock to the next live timer; count the step (the budget);
        move every timer due by now to the ready queue; run what was ready at that point."""
        heap = self._heap
        ready = self._ready
        popleft = ready.popleft
        append = ready.append
        heappop = _heappop
        resolution = self._clock_resolution
        while True:
            cancelled = self._cancelled_timers
            if cancelled > _COMPACT_MIN and cancelled > _COMPACT_FRACTION * len(heap):
                self._compact()
            if not ready and not self._stopping:
                while heap and heap[0][2]._cancelled:
                    heappop(heap)[2]._scheduled = False
                    self._cancelled_timers -= 1
                if not heap:
                    raise Deadlock("no callback is ready and no timer is pending")
                when = heap[0][0]
                if when > self._now:
                    self._now = when  # the jump: nothing can happen before the next timer
            steps = self.steps = self.steps + 1
            max_steps = self.max_steps
            if max_steps is not None and steps > max_steps:
                raise EventBudgetExceeded(f"{max_steps} loop iterations by virtual time {self._now:.3f} s")
            end = self._now + resolution
            while heap and heap[0][0] < end:
                handle = heappop(heap)[2]
                if handle._cancelled:
                    self._cancelled_timers -= 1
                handle._scheduled = False
                append(handle)
            for _ in range(len(ready)):
                handle = popleft()
                if handle._cancelled:
                    continue
                # Handle._run inlined (one Python frame less per event); errors go to the
                # exception handler as there.
                try:
                    handle._context.run(handle._callback, *handle._args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001 - as asyncio.Handle._run
                    self.call_exception_handler({"message": f"Exception in callback {handle._callback!r}",
                                                 "exception": exc, "handle": handle})
            if once or self._stopping:
                return

    def abandon(self) -> None:
        """Drop every pending callback and close every task's coroutine, without running the
        world any further (after EventBudgetExceeded: running on would only spin more).

        Closing a coroutine runs its ``finally`` blocks at once (a node's shutdown closes its
        storage), so call this while the simulated file system is still in use; a block that
        would have to wait is cut short, which is all a dropped world needs."""
        self._ready.clear()
        for _, _, timer in self._heap:
            timer._scheduled = False
        self._heap.clear()
        self._cancelled_timers = 0
        for task in list(tasks_of(self)):
            coro = task.get_coro()
            try:
                coro.close()
            except Exception:  # noqa: BLE001 - a finally that awaited, or failed: the world is gone
                pass
            task._log_destroy_pending = False  # closed on purpose: no "destroyed but pending" warning
        self._ready.clear()

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

