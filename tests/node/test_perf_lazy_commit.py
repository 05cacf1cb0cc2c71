"""Issue 17: a leader sends at most one commit-only broadcast per tick. A later commit advance
in the same tick reaches followers with the next entries (every AppendEntries carries the
commit index) or, when none follow, at the leader's next tick. One write at a time used to
cost every follower a second append, a second Ready and a second ack, and the leader two
more sends and two more acks to read, for every write."""

from __future__ import annotations

import os
import sys

from ukehi.raft.messages import AppendEntries, Heartbeat

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "raft"))
from raftnet import Net  # noqa: E402

IDS = ["n1", "n2", "n3"]
FOLLOWERS = ["n2", "n3"]


def _cluster() -> Net:
    net = Net(IDS)
    net.elect("n1")
    net.tick_all(net["n1"].cfg.heartbeat_tick)  # the no-op's commit reaches everyone
    net.deliver()
    assert all(net[n].log.committed == net["n1"].log.committed for n in IDS)
    net.sent.clear()
    return net


def _write(net: Net, data: bytes) -> int:
    index, _ = net["n1"].propose(data)
    net.flush("n1")
    net.deliver()
    return index


def test_one_commit_only_broadcast_per_tick_the_next_commit_rides_on_the_next_entries():
    net = _cluster()
    net.tick("n1")  # a fresh tick: its one commit-only broadcast is unused
    net.deliver()
    net.sent.clear()
    a = _write(net, b"a")
    # The first commit of the tick goes out at once: every follower applies a.
    assert all(net[f].log.committed == a and net.applied[f][-1].index == a for f in FOLLOWERS)
    net.sent.clear()
    b = _write(net, b"b")
    assert net["n1"].log.committed == b and net.applied["n1"][-1].index == b  # the leader answers at once
    appends = net.sent_of(AppendEntries, src="n1")
    assert len(appends) == 2 and all(m.entries for m in appends)  # b's entries only, no commit-only append
    assert all(net[f].log.committed == a for f in FOLLOWERS)
    net.sent.clear()
    c = _write(net, b"c")
    # The next write's entries carry commit = b: one append per follower per write.
    appends = net.sent_of(AppendEntries, src="n1")
    assert len(appends) == 2 and all(m.entries and m.commit == b for m in appends)
    assert all(net[f].log.committed == b and net.applied[f][-1].index == b for f in FOLLOWERS)
    assert net["n1"].log.committed == c


def test_a_commit_held_back_goes_out_at_the_next_tick_once():
    net = _cluster()
    net.tick("n1")
    net.deliver()
    _write(net, b"a")  # broadcast at once (the tick's one)
    b = _write(net, b"b")  # held back
    assert all(net[f].log.committed < b for f in FOLLOWERS)
    net.sent.clear()
    net.tick("n1")
    net.deliver()
    appends = net.sent_of(AppendEntries, src="n1")
    assert sorted(m.dst for m in appends) == FOLLOWERS and all(not m.entries and m.commit == b for m in appends)
    assert all(net[f].log.committed == b and net.applied[f][-1].index == b for f in FOLLOWERS)
    # Told once: an idle leader's later ticks send heartbeats only.
    net.sent.clear()
    for _ in range(3 * net["n1"].cfg.heartbeat_tick):
        net.tick("n1")
        net.deliver()
    assert not net.sent_of(AppendEntries, src="n1") and net.sent_of(Heartbeat, src="n1")


def test_a_follower_that_does_not_answer_does_not_make_every_tick_send_appends():
    net = _cluster()
    net.isolate("n3")
    net["n1"].report_unreachable("n3")  # probing n3: after one probe, its progress pauses
    for i in range(3):
        _write(net, f"w{i}".encode())
    assert net["n3"].log.committed < net["n1"].log.committed
    net.tick("n1")
    net.deliver()
    assert net["n2"].log.committed == net["n1"].log.committed
    net.sent.clear()
    for _ in range(2 * net["n1"].cfg.heartbeat_tick - 1):
        net.tick("n1")
        net.deliver()
    # n2 was told already, and n3 is paused: no appends to anyone, tick after tick.
    assert not net.sent_of(AppendEntries, src="n1", dst="n2")
