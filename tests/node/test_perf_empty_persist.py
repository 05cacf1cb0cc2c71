"""Issue 17: a Ready whose only durable-state change is the commit index (saved lazily) has
nothing to write, and the real node's disk runs it without a round trip through the WAL
thread (two thread wake-ups per committed write on every node). Anything that does write
(entries, a term or vote change) still goes to the WAL thread, and acks still wait for it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ukehi.node.io import DiskWork, ThreadDisk
from ukehi.raft.messages import AppendEntries, AppendResponse
from ukehi.raft.types import Entry, EntryKind
from ukehi.storage.errors import StorageError

from test_leader_sends_before_persist import IDS, Net, driver_for, finish


def _follower_holding_one_entry():
    """A follower holding entry A durably (acked), not yet committed."""
    net = Net(IDS)
    net.elect("n1")
    follower = net["n2"]
    d, sent = driver_for(follower)
    d.applied = follower.log.applied
    # What recovery does at start: the hard state on disk is the core's current one.
    d.last_saved_hs = (follower.term, follower.vote, follower.log.committed)
    last = follower.log.last_index()
    a = Entry(follower.term, last + 1, EntryKind.NORMAL, b"", 0)
    follower.step(AppendEntries(0, follower.term, "n1", "n2", last, follower.log.term(last), (a,), last))
    work = next(gen := d.cycle())
    assert work.kind == "persist" and not work.empty  # an entry to write: the WAL thread's job
    finish(gen)
    sent.sent.clear()
    return follower, d, sent, last + 1


def test_a_commit_only_append_yields_an_empty_persist_and_the_ack_follows_it():
    follower, d, sent, a = _follower_holding_one_entry()
    # The leader's commit-only append (no entries, commit = A), as sent after every commit.
    follower.step(AppendEntries(0, follower.term, "n1", "n2", a, follower.term, (), a))
    gen = d.cycle()
    work = next(gen)
    assert work.kind == "persist" and work.empty
    finish(gen)
    assert d.applied == a
    acks = [m for _, m in sent.sent if isinstance(m, AppendResponse)]
    assert acks and acks[-1].success and acks[-1].index == a


def test_a_term_change_is_never_an_empty_persist():
    follower, d, sent, a = _follower_holding_one_entry()
    # A newer leader's append: the new term must be durable before the ack.
    term = follower.term + 1
    follower.step(AppendEntries(0, term, "n3", "n2", a, follower.term, (), a))
    work = next(d.cycle())
    assert work.kind == "persist" and not work.empty


# ---------------------------------------------------------------- the WAL-thread disk
def test_the_thread_disk_runs_empty_work_inline_and_real_work_in_its_thread():
    async def main() -> None:
        disk = ThreadDisk()
        seen: list[tuple[str, str]] = []
        here = threading.current_thread().name
        got = await disk.run(DiskWork("persist", lambda: seen.append(("fn", threading.current_thread().name)) or 7,
                                      lambda: seen.append(("meanwhile", threading.current_thread().name)),
                                      empty=True))
        assert got == 7
        assert seen == [("meanwhile", here), ("fn", here)]
        assert disk._thread is None  # the WAL thread was not even started
        await disk.run(DiskWork("persist", lambda: seen.append(("fn", threading.current_thread().name))))
        assert seen[-1] == ("fn", "ukehi-wal")
        await disk.close(lambda: None)
        with pytest.raises(StorageError):
            await disk.run(DiskWork("persist", lambda: None, empty=True))

    asyncio.run(main())
