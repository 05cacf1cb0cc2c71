"""The core's two kinds of trouble: its own broken state (InvariantViolation, the node must
stop) and a peer's bad message (BadPeerMessage, drop it and go on).

The invariant checks guard states a correct cluster never reaches, so these tests make the
broken state by hand: a conflicting committed entry, a commit index pushed back, a Ready
applied out of order. Each check is an explicit raise, so it also holds under ``python -O``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys

import pytest

from raftnet import Net
from ukehi.raft import (
    AppendEntries,
    AppendResponse,
    BadPeerMessage,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    InstallSnapshot,
    InvariantViolation,
    Membership,
    MessageError,
    RaftConfig,
    RaftCore,
    RaftError,
    SnapshotMeta,
    message_from_dict,
)
from ukehi.raft.log import RaftLog

N3 = ["n1", "n2", "n3"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def E(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term, index, EntryKind.NORMAL, data, (term << 32) | index)


def committed_follower() -> tuple[Net, RaftCore]:
    """n1 leads term 1; n2 holds entries 1 (no-op) and 2 ("a"), both committed."""
    net = Net(N3)
    net.elect("n1")
    net["n1"].propose(b"a")
    net.flush("n1")
    net.deliver()
    net.tick("n1")  # the heartbeat carries commit 2 to the followers
    net.deliver()
    n2 = net["n2"]
    assert n2.log.committed == 2 and n2.log.last_index() == 2
    return net, n2


# -- InvariantViolation -----------------------------------------------------------------------


def test_a_leader_append_that_conflicts_with_a_committed_entry_is_an_invariant_violation():
    net, n2 = committed_follower()
    # A leader of term 2 whose log lacks our committed entry 2: its entry 2 has term 2.
    # (step() acks any append below the commit index without looking at it, so this is the
    # follower's append path behind that guard, given the hand-made message directly.)
    forged = AppendEntries(0, 2, "n3", "n2", 1, 1, (E(2, 2, b"other"),), 2)
    n2.term = 2
    with pytest.raises(InvariantViolation) as info:
        n2._append_from_leader(forged)
    exc = info.value
    assert exc.invariant == "committed-entry-conflict"
    assert (exc.term, exc.index) == (2, 2)
    assert "committed" in exc.detail and "term 1" in exc.detail and "term 2" in exc.detail
    # Nothing was overwritten: the committed entry is still ours.
    assert n2.log.entry(2).data == b"a" and n2.log.committed == 2
    # No handler meant for ordinary refusals can swallow it.
    assert not isinstance(exc, (ValueError, RaftError, AssertionError))


def test_the_log_refuses_to_overwrite_a_committed_entry_or_leave_a_gap():
    log = RaftLog(SnapshotMeta(0, 0, Membership(voters=frozenset(N3))), [E(1, 1), E(2, 1)])
    log.committed = 2
    with pytest.raises(InvariantViolation) as info:
        log.append([E(2, 2), E(3, 2)])
    assert info.value.invariant == "committed-entry-overwritten" and info.value.index == 2
    assert [e.term for e in log.entries] == [1, 1]
    with pytest.raises(InvariantViolation) as info:
        log.append([E(5, 1)])
    assert info.value.invariant == "log-gap" and info.value.index == 5
    log.append([E(3, 1)])  # the same log still takes a correct append
    assert log.last_index() == 3


def test_the_commit_index_never_goes_backwards_nor_past_the_log():
    log = RaftLog(SnapshotMeta(0, 0, Membership(voters=frozenset(N3))), [E(1, 1), E(2, 1), E(3, 1)])
    log.commit_to(2)
    with pytest.raises(InvariantViolation) as info:
        log.commit_to(1)
    assert info.value.invariant == "commit-index-regressed" and info.value.index == 1
    with pytest.raises(InvariantViolation) as info:
        log.commit_to(4)
    assert info.value.invariant == "commit-beyond-log" and info.value.index == 4
    assert log.committed == 2
    log.commit_to(3)
    assert log.committed == 3


def test_a_ready_applied_out_of_order_is_an_invariant_violation():
    n1 = RaftCore("n1", RaftConfig(election_tick=10), rng=random.Random(1), initial_membership=["n1"])
    while n1.log.applied < 1:  # a single voter elects itself and commits its no-op
        n1.tick()
        while n1.has_ready():
            n1.advance(n1.ready())
    n1.propose(b"a")
    n1.propose(b"b")
    n1.advance(n1.ready())  # persisted: the leader's own copy counts only now, so 2 and 3 commit
    rd = n1.ready()
    assert [e.index for e in rd.committed_entries] == [2, 3]
    skipped = dataclasses.replace(rd, committed_entries=rd.committed_entries[1:])
    with pytest.raises(InvariantViolation) as info:
        n1.advance(skipped)
    assert info.value.invariant == "apply-out-of-order"
    assert (info.value.term, info.value.index) == (1, 3)


def test_a_snapshot_of_an_index_the_log_lost_is_an_invariant_violation():
    net = Net(N3)
    net.elect("n1")
    n1 = net["n1"]
    n1.log.applied = 5  # hand-broken: applied past the last entry (1)
    with pytest.raises(InvariantViolation) as info:
        n1.snapshot_meta_for(3)
    assert info.value.invariant == "applied-entry-missing" and info.value.index == 3


def test_the_checks_hold_under_python_dash_O():
    """asserts vanish under -O; these raises must not."""
    code = (
        "from ukehi.raft.errors import InvariantViolation\n"
        "from ukehi.raft.log import RaftLog\n"
        "from ukehi.raft import Entry, EntryKind, Membership, SnapshotMeta\n"
        "assert False, 'asserts are on'\n"  # proves -O took effect: this line must not raise
        "log = RaftLog(SnapshotMeta(0, 0, Membership(voters=frozenset({'n1'}))),"
        " [Entry(1, 1, EntryKind.NORMAL, b'', 1)])\n"
        "log.committed = 1\n"
        "try:\n"
        "    log.append([Entry(2, 1, EntryKind.NORMAL, b'', 2)])\n"
        "except InvariantViolation as e:\n"
        "    print('raised', e.invariant)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "raised committed-entry-overwritten"


# -- BadPeerMessage ---------------------------------------------------------------------------


def test_an_ack_past_the_leaders_log_is_a_bad_peer_message_and_changes_nothing():
    net = Net(N3)
    net.elect("n1")
    n1 = net["n1"]
    before = (n1.prs["n2"].match, n1.prs["n2"].next, n1.log.committed)
    # Counted, this ack would let n1 commit entries 2..50 on n2's word once it has them.
    with pytest.raises(BadPeerMessage, match="past this leader's last index"):
        n1.step(AppendResponse(0, 1, "n2", "n1", True, 50))
    assert (n1.prs["n2"].match, n1.prs["n2"].next, n1.log.committed) == before
    # The leader goes on: a new entry commits with the real acks only.
    index, _ = n1.propose(b"x")
    net.flush("n1")
    net.deliver()
    assert n1.log.committed == index and n1.prs["n2"].match == index


def test_misrouted_malformed_and_oversized_messages_are_bad_peer_messages():
    net = Net(N3, RaftConfig(election_tick=10, max_snapshot_size=100))
    with pytest.raises(BadPeerMessage, match="group"):
        net["n1"].step(Heartbeat(7, 1, "n2", "n1", 0))
    with pytest.raises(BadPeerMessage, match="n3"):
        net["n1"].step(Heartbeat(0, 1, "n2", "n3", 0))
    m = Membership(voters=frozenset(N3))
    with pytest.raises(BadPeerMessage, match="max_snapshot_size"):
        net["n2"].step(InstallSnapshot(0, 1, "n1", "n2", 50, 1, m, 0, 10**9, b"x"))
    with pytest.raises(BadPeerMessage):  # a wire-level MessageError is one too
        message_from_dict({"type": "heartbeat", "group_id": 0})
    assert issubclass(MessageError, BadPeerMessage) and issubclass(BadPeerMessage, ValueError)
    assert not issubclass(InvariantViolation, BadPeerMessage)


def test_a_follower_that_already_holds_the_snapshot_index_acks_only_that_index():
    """Its entries after the snapshot may be an old leader's tail the new leader never had:
    acking its last index would be an ack past the leader's log (and could commit on it)."""
    n2 = RaftCore("n2", RaftConfig(election_tick=10), rng=random.Random(1),
                  hard_state=HardState(1, None, 0), entries=[E(i, 1) for i in range(1, 6)],
                  initial_membership=N3)
    m = Membership(voters=frozenset(N3))
    n2.step(InstallSnapshot(0, 2, "n1", "n2", 3, 1, m, 0, 4, b"data"))
    rd = n2.ready()
    acks = [msg for msg in rd.messages if isinstance(msg, AppendResponse)]
    assert [(a.success, a.index) for a in acks] == [(True, 3)]
    assert n2.log.committed == 3 and rd.snapshot is None
    n2.advance(rd)


def test_a_requested_snapshot_is_reported_after_advance_as_the_ready_contract_says():
    n1 = RaftCore("n1", RaftConfig(election_tick=10, compaction_threshold=3), rng=random.Random(1),
                  initial_membership=["n1"])
    while n1.log.applied < 1:
        n1.tick()
        while n1.has_ready():
            n1.advance(n1.ready())
    for k in range(3):
        n1.propose(b"x%d" % k)
    n1.advance(n1.ready())  # persisted: the leader's own copy counts only now, so 2..4 commit
    rd = n1.ready()
    assert rd.snapshot_request == 4 and rd.committed_entries[-1].index == 4
    with pytest.raises(RuntimeError, match="advance"):  # not before advance
        n1.report_snapshot_taken(4, b"state at 4")
    n1.advance(rd)
    meta = n1.report_snapshot_taken(4, b"state at 4")
    assert meta is not None and meta.index == 4 and n1.log.snapshot.index == 4
