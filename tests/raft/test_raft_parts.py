"""The building blocks of the core on their own: quorum arithmetic, configuration changes,
the in-memory log, and follower progress tracking."""

from __future__ import annotations

import pytest

from ukehi.raft import ConfChange, ConfChangeType, Entry, EntryKind, Membership, SnapshotMeta
from ukehi.raft.confchange import encode_membership, enter_config, leave_joint
from ukehi.raft.errors import InvariantViolation
from ukehi.raft.log import RaftLog
from ukehi.raft.quorum import VoteResult, committed_index, has_quorum, vote_result
from ukehi.raft.tracker import Inflights, Progress, ProgressState


def m(voters, outgoing=(), learners=()):
    return Membership(frozenset(voters), frozenset(outgoing), frozenset(learners))


def E(index, term, kind=EntryKind.NORMAL, data=b""):
    return Entry(term, index, kind, data, (term << 32) | index)


# -- quorum ---------------------------------------------------------------------------------------


def test_committed_index_is_the_majority_index_and_the_minimum_of_both_halves_when_joint():
    acked = {"a": 9, "b": 7, "c": 2, "d": 8, "e": 1}.get
    assert committed_index(m("abc"), acked) == 7
    assert committed_index(m("abcde"), acked) == 7
    # C_new = {c, d, e} only has 2 at a majority; joint takes the smaller.
    assert committed_index(m("cde", outgoing="abc"), acked) == 2


def test_votes_need_a_majority_of_each_half_and_lose_early():
    assert vote_result(m("abc"), {"a": True, "b": True}) is VoteResult.WON
    assert vote_result(m("abc"), {"a": True, "b": False}) is VoteResult.PENDING
    assert vote_result(m("abc"), {"a": True, "b": False, "c": False}) is VoteResult.LOST
    joint = m("ade", outgoing="abc")
    assert vote_result(joint, {"a": True, "b": True, "c": True}) is VoteResult.PENDING
    assert vote_result(joint, {"a": True, "b": True, "d": True}) is VoteResult.WON
    assert vote_result(joint, {"a": True, "d": False, "e": False}) is VoteResult.LOST
    assert has_quorum(m("abcd"), {"a", "b", "c"}) and not has_quorum(m("abcd"), {"a", "b"})


# -- configuration changes ----------------------------------------------------------------------


def test_changing_voters_enters_joint_and_leaving_drops_the_old_set():
    cur = m("abc")
    joint = enter_config(cur, [ConfChange(ConfChangeType.ADD_VOTER, "d"),
                               ConfChange(ConfChangeType.REMOVE, "a")])
    assert joint == m("bcd", outgoing="abc")
    assert leave_joint(joint) == m("bcd")


def test_learner_only_changes_need_no_joint_phase_and_promotion_does():
    with_learner = enter_config(m("abc"), [ConfChange(ConfChangeType.ADD_LEARNER, "z")])
    assert with_learner == m("abc", learners="z") and not with_learner.joint
    promoted = enter_config(with_learner, [ConfChange(ConfChangeType.ADD_VOTER, "z")])
    assert promoted == m("abcz", outgoing="abc")


@pytest.mark.parametrize(
    "cur, changes, complaint",
    [
        (m("ab", outgoing="abc"), [ConfChange("add_voter", "d")], "joint"),
        (m("abc"), [], "at least one"),
        (m("abc"), [ConfChange("add_voter", "a")], "already a voter"),
        (m("abc"), [ConfChange("add_learner", "a")], "remove it first"),
        (m("abc"), [ConfChange("remove", "z")], "not a member"),
        (m("a"), [ConfChange("remove", "a")], "at least one voter"),
        (m("abc"), [ConfChange("add_voter", "d"), ConfChange("remove", "d")], "twice"),
    ],
)
def test_invalid_changes_are_refused(cur, changes, complaint):
    with pytest.raises(ValueError, match=complaint):
        enter_config(cur, changes)


def test_unknown_conf_change_op_lists_the_valid_ones():
    with pytest.raises(ValueError, match="add_voter, add_learner, remove"):
        ConfChange("promote", "a")


# -- log ----------------------------------------------------------------------------------------


def test_overwriting_a_suffix_reverts_its_configuration_and_flags_truncation():
    base = SnapshotMeta(0, 0, m("abc"))
    conf = E(3, 1, EntryKind.CONFIG, encode_membership(m("abcd", outgoing="abc")))
    log = RaftLog(base, [E(1, 1), E(2, 1), conf, E(4, 1)])
    assert log.membership().joint and log.stable == 4
    log.append([E(3, 2), E(4, 2), E(5, 2)])
    assert log.membership() == m("abc")
    assert log.truncated and log.stable == 2
    assert [e.term for e in log.unstable_entries()] == [2, 2, 2]


def test_find_conflict_by_term_skips_back_over_a_whole_term():
    log = RaftLog(SnapshotMeta(0, 0, m("a")), [E(1, 1), E(2, 1)] + [E(i, 3) for i in range(3, 30)])
    assert log.find_conflict_by_term(29, 2) == 2
    assert log.find_conflict_by_term(29, 3) == 29
    assert log.find_conflict_by_term(29, 0) == 0


def test_compaction_keeps_the_configuration_of_the_snapshot_index():
    conf = E(2, 1, EntryKind.CONFIG, encode_membership(m("ab")))
    log = RaftLog(SnapshotMeta(0, 0, m("abc")), [E(1, 1), conf, E(3, 1), E(4, 1)])
    log.committed = log.applied = 4
    log.compact(SnapshotMeta(3, 1, log.membership_at(3)))
    assert log.first_index() == 4 and log.term(3) == 1 and log.term(2) is None
    assert log.membership() == m("ab") and log.snapshot.membership == m("ab")


def test_the_log_refuses_to_overwrite_committed_entries():
    log = RaftLog(SnapshotMeta(0, 0, m("a")), [E(1, 1), E(2, 1)])
    log.committed = 2
    with pytest.raises(InvariantViolation, match="committed") as info:
        log.append([E(2, 2)])
    assert info.value.invariant == "committed-entry-overwritten" and info.value.index == 2


def test_batches_are_bounded_by_count_and_bytes_but_never_empty():
    log = RaftLog(SnapshotMeta(0, 0, m("a")), [E(i, 1, data=b"x" * 100) for i in range(1, 11)])
    assert len(log.slice(1, 10, 3, 1 << 20)) == 3
    assert len(log.slice(1, 10, 100, 300)) == 2
    assert len(log.slice(1, 10, 100, 1)) == 1


# -- progress -------------------------------------------------------------------------------------


def test_inflights_bound_the_pipeline_and_free_on_ack():
    w = Inflights(2)
    w.add(5)
    w.add(9)
    assert w.full()
    w.free_le(5)
    assert not w.full() and len(w) == 1


def test_probe_moves_next_back_using_the_hint_and_ignores_stale_rejections():
    pr = Progress(next_index=30, max_inflight=4)
    assert pr.maybe_decr_to(rejected=29, match_hint=10)
    assert pr.next == 11
    assert not pr.maybe_decr_to(rejected=29, match_hint=5)  # not the outstanding probe
    pr.maybe_update(10)
    pr.become_replicate()
    assert not pr.maybe_decr_to(rejected=8, match_hint=12)  # matched already: stale


def test_a_lower_hint_while_replicating_is_a_suspicion_that_only_the_probe_at_match_confirms():
    pr = Progress(next_index=1, max_inflight=4)
    pr.maybe_update(20)
    pr.become_replicate()
    # Stale (an older window's) or a WAL cut: no way to tell yet, so keep replicating.
    assert not pr.maybe_decr_to(rejected=20, match_hint=7)
    assert not pr.maybe_decr_to(rejected=23, match_hint=7)  # past match too
    assert (pr.match, pr.next, pr.state) == (20, 21, ProgressState.REPLICATE)
    assert pr.rejection_held
    pr.become_probe()  # what the leader does at the next heartbeat answer
    assert pr.next == 21 and not pr.rejection_held
    assert not pr.maybe_decr_to(rejected=23, match_hint=7)  # not the outstanding probe
    assert pr.maybe_decr_to(rejected=20, match_hint=7)  # the probe at match refused: believe it
    assert (pr.match, pr.next) == (7, 8)


def test_a_newer_ack_clears_the_suspicion_of_lost_entries():
    pr = Progress(next_index=1, max_inflight=4)
    pr.maybe_update(20)
    pr.become_replicate()
    assert not pr.maybe_decr_to(rejected=18, match_hint=12)
    assert pr.rejection_held
    assert not pr.maybe_update(19)  # an old ack is no news ...
    assert pr.rejection_held
    assert pr.maybe_update(22)  # ... a newer one shows the follower holds more than before
    assert not pr.rejection_held


def test_replicating_a_rejection_past_match_with_a_hint_at_or_above_it_probes_as_etcd():
    pr = Progress(next_index=1, max_inflight=16)
    pr.maybe_update(20)
    pr.become_replicate()
    pr.next = 31  # appends for 21-30 sent
    assert pr.maybe_decr_to(rejected=24, match_hint=20)
    assert pr.next == 21 and not pr.rejection_held


def test_snapshot_state_pauses_appends_until_the_follower_has_it():
    pr = Progress(next_index=1, max_inflight=4)
    pr.become_snapshot(50)
    assert pr.is_paused() and pr.state is ProgressState.SNAPSHOT
    pr.maybe_update(50)
    pr.become_probe()
    assert pr.next == 51 and not pr.is_paused()


def test_find_conflict_by_term_matches_a_linear_scan_on_many_logs():
    import random

    rng = random.Random(5)
    for _ in range(300):
        base = rng.randrange(0, 5)
        term = rng.randrange(0, 3)
        entries = []
        for i in range(base + 1, base + 1 + rng.randrange(0, 30)):
            term += rng.random() < 0.3
            entries.append(E(i, max(term, 1)))
        log = RaftLog(SnapshotMeta(base, min(1, term), m("a")), entries)
        idx, t = rng.randrange(0, base + 40), rng.randrange(0, term + 2)
        expect = min(idx, log.last_index())
        while expect > base and log.term(expect) > t:
            expect -= 1
        assert log.find_conflict_by_term(idx, t) == expect
