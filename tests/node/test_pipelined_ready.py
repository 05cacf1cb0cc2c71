"""Issue 17: the node's dedicated WAL thread, and the Ready pipeline that applies and answers
the entries committed earlier while this Ready's entries are written, with acks still sent
only once the write is durable."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ukehi.node.io import DiskWork, ThreadDisk
from ukehi.raft.messages import AppendEntries, AppendResponse
from ukehi.raft.types import Entry, EntryKind
from ukehi.storage.errors import StorageError

from test_leader_sends_before_persist import IDS, Net, driver_for, finish


# ---------------------------------------------------------------- the driver's pipeline
def _follower_with_entry_to_commit():
    """A follower that holds entry A durably and now receives entry B with A committed."""
    net = Net(IDS)
    net.elect("n1")
    follower = net["n2"]
    d, sent = driver_for(follower)
    d.applied = follower.log.applied
    last = follower.log.last_index()
    a = Entry(follower.term, last + 1, EntryKind.NORMAL, b"", 0)
    follower.step(AppendEntries(0, follower.term, "n1", "n2", last, follower.log.term(last), (a,), 0))
    finish(d.cycle())  # A is durable (the persist "ran"), acked, not yet committed
    assert d.applied == last and follower.log.stable == last + 1
    b = Entry(follower.term, last + 2, EntryKind.NORMAL, b"", 0)
    follower.step(AppendEntries(0, follower.term, "n1", "n2", last + 1, follower.term, (b,), last + 1))
    sent.sent.clear()
    return d, sent, last + 1, last + 2


def test_entries_committed_earlier_are_applied_while_the_new_ones_are_written_and_acks_wait():
    d, sent, a, b = _follower_with_entry_to_commit()
    # The persist of B is yielded with the apply of A as its 'meanwhile' work.
    gen = d.cycle()
    persist = next(gen)
    assert persist.kind == "persist" and persist.meanwhile is not None
    assert d.applied == a - 1
    persist.meanwhile()  # what the WAL-thread disk does while B's write runs
    assert d.applied == a  # A applied (and its client answered) before B is durable ...
    assert not any(isinstance(m, AppendResponse) for _, m in sent.sent)  # ... but no ack yet
    finish(gen)
    acks = [m for _, m in sent.sent if isinstance(m, AppendResponse)]
    assert acks and acks[-1].success and acks[-1].index == b  # the ack for B only after its persist
    assert d.applied == a  # not applied twice, nothing else applied


def test_a_disk_that_ignores_meanwhile_gets_the_old_order_persist_send_apply():
    d, sent, a, b = _follower_with_entry_to_commit()
    order: list[str] = []
    real_apply = d.apply
    d.apply = lambda entries: (order.append("apply"), real_apply(entries))[1]  # type: ignore[method-assign]
    real_send = d._send_messages
    d._send_messages = lambda rd: (order.append("send"), real_send(rd))[1]  # type: ignore[method-assign]
    gen = d.cycle()
    persist = next(gen)
    assert persist.kind == "persist" and order == []
    finish(gen)  # the simulator's disk: runs fn, never calls meanwhile
    assert order == ["send", "apply"] and d.applied == a


# ---------------------------------------------------------------- the WAL thread
def test_the_wal_thread_runs_jobs_in_order_on_one_thread_off_the_loop():
    async def scenario() -> list[tuple[int, int]]:
        disk = ThreadDisk()
        seen: list[tuple[int, int]] = []
        futs = [asyncio.ensure_future(disk.run(DiskWork("persist", lambda i=i: seen.append(
            (i, threading.get_ident())) or i))) for i in range(50)]
        results = await asyncio.gather(*futs)
        assert results == list(range(50))
        await disk.close(lambda: None)
        return seen

    seen = asyncio.run(scenario())
    assert [i for i, _ in seen] == list(range(50))
    threads = {t for _, t in seen}
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_meanwhile_runs_while_the_write_is_in_flight():
    async def scenario() -> bool:
        disk = ThreadDisk()
        released = threading.Event()
        # The write can only finish early if the loop ran 'meanwhile' while it was running.
        got = await disk.run(DiskWork("persist", lambda: released.wait(5.0), released.set))
        await disk.close(lambda: None)
        return got

    t0 = time.monotonic()
    assert asyncio.run(scenario()) is True
    assert time.monotonic() - t0 < 4.0


def test_a_failed_write_reaches_the_driver_and_a_failed_meanwhile_waits_for_the_write():
    async def scenario() -> None:
        disk = ThreadDisk()

        def broken() -> None:
            raise OSError(5, "disk gone")

        with pytest.raises(OSError, match="disk gone"):
            await disk.run(DiskWork("persist", broken))
        finished = threading.Event()

        def slow_write() -> None:
            time.sleep(0.2)
            finished.set()

        def bad_apply() -> None:
            raise RuntimeError("apply failed")

        with pytest.raises(RuntimeError, match="apply failed"):
            await disk.run(DiskWork("persist", slow_write, bad_apply))
        assert finished.is_set()  # the error surfaced only after the write in flight ended
        await disk.close(lambda: None)

    asyncio.run(scenario())


def test_close_runs_after_the_work_queued_before_it_and_refuses_work_after():
    async def scenario() -> list[str]:
        disk = ThreadDisk()
        order: list[str] = []
        pending = asyncio.ensure_future(disk.run(DiskWork("persist", lambda: (time.sleep(0.1), order.append("persist")))))
        await asyncio.sleep(0)  # the persist is queued first
        await disk.close(lambda: order.append("close"))
        await pending
        with pytest.raises(StorageError, match="storage is closed"):
            await disk.run(DiskWork("persist", lambda: order.append("late")))
        return order

    assert asyncio.run(scenario()) == ["persist", "close"]
