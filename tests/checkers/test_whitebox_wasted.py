"""Wasted-work rules on hand-made event sequences (ukehi.sim.world.WasteWatch,
ukehi.sim.fs.SimFS's clean-fsync count, checkers/whitebox/wasted.py): each rule is caught
with an explanation naming the leader, follower, term and index (or node and file), and the
resends a correct leader makes for a reason it knows of are not."""

from __future__ import annotations

import os

from checkers.whitebox.wasted import (
    check_append_cap,
    check_redundant_fsync,
    check_redundant_replication,
    check_wasted_work,
)
from ukehi.sim.fs import SimFS
from ukehi.sim.world import WasteWatch


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def watch(max_entries: int = 64, max_bytes: int = 1 << 20) -> tuple[WasteWatch, Clock]:
    clock = Clock()
    return WasteWatch(max_entries, max_bytes, clock), clock


def streaming(w: WasteWatch, clock: Clock) -> None:
    """n1 leads term 3; n2 acknowledged index 5 (newer than anything before): n1 streams."""
    clock.t = 1.0
    w.sent_append("n1", "n2", 3, 4, 1, 10)  # the probe: entry 5
    clock.t = 1.01
    w.heard("n2", "n1")
    w.delivered_response("n2", "n1", 3, True, 5)


# ---------------------------------------------------------------- redundant-replication
def test_a_streamed_entry_sent_again_with_no_sign_of_loss_is_caught_naming_leader_follower_term_index():
    w, clock = watch()
    streaming(w, clock)
    clock.t = 1.02
    w.sent_append("n1", "n2", 3, 5, 3, 30)  # entries 6-8, streaming
    clock.t = 1.1
    w.heard("n2", "n1")  # a heartbeat answer: a probing leader's reason, not a streaming one's
    w.sent_append("n1", "n2", 3, 5, 3, 30)  # 6-8 again (back to probing on a heartbeat)
    out = check_redundant_replication(w.summary())
    assert out["valid"] is False
    assert out["resends"] == {"unprompted": 0, "replicating": 1}
    v = out["violations"][0]
    assert (v["rule"], v["leader"], v["follower"], v["term"], v["index"]) == ("replicating", "n1", "n2", 3, 6)
    assert "n1 (leader, term 3) re-sent entry 6 to n2" in out["explanation"]
    assert "acknowledged up to 5" in out["explanation"]


def test_resends_after_a_rejection_a_loss_a_restart_or_a_snapshot_are_allowed():
    for reset in ("rejection-sent", "rejection-received", "loss-to", "loss-from", "restart"):
        w, clock = watch()
        streaming(w, clock)
        w.sent_append("n1", "n2", 3, 5, 3, 30)
        clock.t = 1.2
        if reset == "rejection-sent":
            w.sent_rejection("n2", "n1")
        elif reset == "rejection-received":
            w.delivered_response("n2", "n1", 3, False, 5)
        elif reset == "loss-to":
            w.dropped("n1", "n2")
        elif reset == "loss-from":
            w.dropped("n2", "n1")
        else:
            w.lost_log("n2")
        w.heard("n2", "n1")
        w.sent_append("n1", "n2", 3, 5, 3, 30)
        assert check_redundant_replication(w.summary())["valid"] is True, reset
    # A loss between other nodes is no excuse.
    w, clock = watch()
    streaming(w, clock)
    w.sent_append("n1", "n2", 3, 5, 3, 30)
    w.dropped("n1", "n3")
    w.heard("n2", "n1")
    w.sent_append("n1", "n2", 3, 5, 3, 30)
    assert check_redundant_replication(w.summary())["valid"] is False


def test_the_probe_resent_on_a_heartbeat_answer_and_the_switch_to_streaming_are_allowed():
    w, clock = watch()
    # Probing (no ack yet this term): the probe goes again on each heartbeat answer.
    w.sent_append("n1", "n2", 3, 4, 2, 20)  # entries 5-6
    clock.t = 0.1
    w.heard("n2", "n1")
    w.sent_append("n1", "n2", 3, 4, 2, 20)
    clock.t = 0.2
    w.heard("n2", "n1")
    w.sent_append("n1", "n2", 3, 4, 3, 30)  # 5-7: a new entry came meanwhile
    # The first probe's ack (index 6) turns n1 to streaming from 7: entry 7 goes again,
    # a copy made before that ack.
    clock.t = 0.21
    w.heard("n2", "n1")
    w.delivered_response("n2", "n1", 3, True, 6)
    w.sent_append("n1", "n2", 3, 6, 2, 20)  # 7-8
    # A stale ack (not newer) and a later newer one change nothing.
    w.delivered_response("n2", "n1", 3, True, 6)
    w.delivered_response("n2", "n1", 3, True, 8)
    w.sent_append("n1", "n2", 3, 8, 1, 10)  # 9
    out = check_redundant_replication(w.summary())
    assert out["valid"] is True, out
    assert out["appends"] == 5 and out["entries_sent"] == 10


def test_a_resend_with_nothing_heard_from_the_follower_is_unprompted_even_while_probing():
    w, clock = watch()
    w.sent_append("n1", "n2", 3, 4, 2, 20)  # the probe, 5-6
    w.heard("n3", "n1")  # another follower's answer says nothing about n2
    clock.t = 0.05
    w.sent_append("n1", "n2", 3, 4, 3, 30)  # 5-7: a new proposal, the probe resent unasked
    out = check_redundant_replication(w.summary())
    assert out["valid"] is False and out["resends"]["unprompted"] == 1
    v = out["violations"][0]
    assert (v["rule"], v["leader"], v["follower"], v["term"], v["index"]) == ("unprompted", "n1", "n2", 3, 5)
    assert "nothing from n2 reached it since" in out["explanation"]


def test_a_new_term_starts_afresh_and_an_older_leaders_appends_are_not_judged():
    w, clock = watch()
    streaming(w, clock)
    w.sent_append("n1", "n2", 3, 5, 3, 30)
    w.sent_append("n3", "n2", 4, 5, 3, 30)  # the new leader of term 4 sends 6-8 (first time)
    w.sent_append("n1", "n2", 4, 5, 3, 30)  # n1 leading term 4 now: a new pair state
    assert check_redundant_replication(w.summary())["valid"] is True
    w.sent_append("n1", "n2", 3, 5, 3, 30)  # a term-3 append after term 4 began: not judged
    assert check_redundant_replication(w.summary())["valid"] is True


def test_empty_appends_are_never_resends():
    w, clock = watch()
    streaming(w, clock)
    for _ in range(3):
        w.sent_append("n1", "n2", 3, 5, 0, 0)
    assert check_redundant_replication(w.summary())["valid"] is True


# ---------------------------------------------------------------- append-cap
def test_an_append_over_the_entry_or_byte_cap_is_caught_and_a_single_big_entry_is_not():
    w, clock = watch(max_entries=8, max_bytes=100)
    w.sent_append("n1", "n2", 3, 0, 8, 80)  # at the caps
    w.sent_append("n1", "n3", 3, 0, 1, 5000)  # one entry over the byte cap: allowed
    assert check_append_cap(w.summary())["valid"] is True
    w.sent_append("n1", "n2", 3, 8, 9, 90)  # 9 entries
    w.sent_append("n1", "n3", 3, 1, 2, 101)  # 2 entries over 100 bytes
    out = check_append_cap(w.summary())
    assert out["valid"] is False and out["violation_count"] == 2
    assert "n1 (leader, term 3) sent n2 an append of entries 9-17" in out["explanation"]
    assert "over max_entries_per_message=8" in out["explanation"]
    assert "2 entries of 101 data bytes, over max_bytes_per_message=100" in out["explanation"]


# ---------------------------------------------------------------- redundant-fsync
def test_an_fsync_of_a_clean_file_is_counted_and_named():
    fs = SimFS()
    fs.register_node("/sim/n1")
    fs.makedirs("/sim/n1/data/wal")
    t = [0.0]
    fs.clock = lambda: t[0]
    path = "/sim/n1/data/wal/wal-00000001.seg"
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    fs.fsync(fd)  # a new file: dirty (its creation)
    fs.write(fd, b"abc")
    fs.fsync(fd)
    assert fs.clean_fsyncs == {}
    d = fs.open("/sim/n1/data/wal", os.O_RDONLY)
    fs.fsync(d)
    fs.fsync(d)  # directories are out of scope
    assert fs.clean_fsyncs == {}
    t[0] = 2.5
    fs.fsync(fd)  # nothing written since: wasted
    fs.fsync(fd)
    fs.ftruncate(fd, 2)
    fs.fsync(fd)  # truncated since: not wasted
    assert fs.clean_fsyncs == {path: [2, 2.5]}
    out = check_redundant_fsync(fs.clean_fsyncs, {"n1": "/sim/n1", "n2": "/sim/n2"})
    assert out["valid"] is False and out["clean_fsyncs"] == 2
    assert out["violations"][0]["node"] == "n1"
    assert out["explanation"].startswith("n1 fsynced data/wal/wal-00000001.seg 2 times with no write")
    assert "t=2.500 s" in out["explanation"]


def test_a_crash_revert_makes_a_file_dirty_again():
    import random

    fs = SimFS()
    fs.register_node("/sim/n1")
    fs.makedirs("/sim/n1/data")
    path = "/sim/n1/data/f"
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    d = fs.open("/sim/n1/data", os.O_RDONLY)
    fs.write(fd, b"abc")
    fs.fsync(fd)
    fs.fsync(d)
    fs.write(fd, b"def")  # unsynced: the crash reverts it
    fs.crash("/sim/n1", random.Random(1), 0.0)
    fs.revive("/sim/n1")
    fd = fs.open(path, os.O_WRONLY | os.O_APPEND)
    fs.fsync(fd)  # the recovering process syncs what it found: allowed
    assert fs.clean_fsyncs == {}


def test_all_clean_is_valid_with_every_checker():
    w, _ = watch()
    out = check_wasted_work({}, {"n1": "/sim/n1"}, w.summary())
    assert set(out) == {"redundant-fsync", "redundant-replication", "append-cap"}
    assert all(r["valid"] is True for r in out.values())
