"""The virtual-time loop (ukehi.sim.loop): the clock jumps to the next timer, equal times run
in the order they were set, cancelled timers never run, and a failing callback goes to the
exception handler (handles are run inline there, not through Handle._run)."""

from __future__ import annotations

import asyncio

import pytest

from ukehi.sim.loop import Deadlock, VirtualLoop


def test_timers_jump_the_clock_and_keep_their_order():
    loop = VirtualLoop()
    seen: list[tuple[str, float]] = []
    try:
        loop.call_later(2.0, lambda: seen.append(("b", loop.time())))
        loop.call_later(1.0, lambda: seen.append(("a", loop.time())))
        loop.call_later(2.0, lambda: seen.append(("c", loop.time())))
        cancelled = loop.call_later(1.5, lambda: seen.append(("x", loop.time())))
        cancelled.cancel()
        loop.call_soon(lambda: seen.append(("now", loop.time())))
        loop.run_until(3.0)
        assert seen == [("now", 0.0), ("a", 1.0), ("b", 2.0), ("c", 2.0)]
        assert loop.time() == 3.0
    finally:
        loop.close()


def test_asyncio_code_runs_in_virtual_time():
    loop = VirtualLoop()

    async def main() -> float:
        await asyncio.sleep(100.0)
        await asyncio.wait_for(asyncio.sleep(1.0), timeout=5.0)
        return loop.time()

    try:
        assert loop.run_until_complete(main()) == 101.0
    finally:
        loop.close()


def test_a_failing_callback_goes_to_the_exception_handler_and_the_loop_goes_on():
    loop = VirtualLoop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    after: list[float] = []

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        loop.call_later(1.0, boom)
        loop.call_later(2.0, lambda: after.append(loop.time()))
        loop.run_until(3.0)
        assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)
        assert "boom" in str(errors[0]["exception"]) and "Exception in callback" in errors[0]["message"]
        assert after == [2.0]
    finally:
        loop.close()


def test_nothing_to_do_is_a_deadlock_not_a_hang():
    loop = VirtualLoop()

    async def forever() -> None:
        await loop.create_future()

    try:
        with pytest.raises(Deadlock):
            loop.run_until_complete(forever())
    finally:
        loop.close()


def test_a_runaway_stops_at_its_iteration_budget_at_the_same_point_every_time():
    from ukehi.sim.loop import EventBudgetExceeded

    def spin(max_steps: int) -> tuple[float, int]:
        loop = VirtualLoop()
        loop.max_steps = max_steps

        async def ping(n: int) -> None:  # two tasks that never stop trading messages
            while True:
                await asyncio.sleep(0.001 * n)

        async def main() -> None:
            await asyncio.gather(ping(1), ping(3))

        try:
            with pytest.raises(EventBudgetExceeded, match=f"{max_steps} loop iterations"):
                loop.run_until_complete(main())
            return loop.time(), loop.steps
        finally:
            loop.abandon()
            loop.close()

    first = spin(500)
    assert first == spin(500)  # counted in iterations: deterministic
    assert first[1] == 501 and 0 < first[0] < 1.0


def test_abandon_runs_finally_blocks_at_once_and_leaves_nothing_pending():
    loop = VirtualLoop()
    closed: list[str] = []

    async def node(name: str) -> None:
        try:
            await asyncio.sleep(1e9)
        finally:
            closed.append(name)  # a node's shutdown: must run while the world's fs is in use

    try:
        for name in ("n1", "n2"):
            loop.create_task(node(name))
        loop.run_until(1.0)
        assert closed == []
        loop.abandon()
        assert sorted(closed) == ["n1", "n2"]
        assert not loop._ready and not loop._heap
    finally:
        loop.close()
