"""catch-up (checkers/whitebox/catchup.py): a node a fault brought back must reach what the
cluster had committed within the nemesis's bound while no other fault is active.

Histories and node logs are hand-made in the shapes a real snapshot-lag run writes (the
nemesis's op value with its ``catch_up`` record; the follower's ``node.log`` with its
``starting``, ``applied`` and ``snapshot-installed`` lines)."""

from __future__ import annotations

from pathlib import Path

from checkers.history import Op
from checkers.whitebox import NAMES, check_catch_up, check_whitebox, read_cluster
from checkers.whitebox.catchup import LEGACY_WAIT_S, catch_up_records

from whitebox_nodes import HISTORY, healthy, put, term_entries, write_all

S = 1_000_000_000
FOLLOWER_PID = 102  # the pid of n3's second process (Node.start counts from 101)


def lag_value(reached: bool, *, applied: int = 60, snap: int = 50, target: int = 100, pid: int = FOLLOWER_PID,
              wait_s: float = 15.0) -> dict:
    """A snapshot-lag op's value as nemeses/snapshot_lag.py records it."""
    return {"follower": "n3", "leader": "n1", "follower_holds_at_most": 59, "killed": {"n3": 101},
            "cut_off_at_ms": 30.0, "compacted_to": target, "compacted_by": "threshold", "compacted_at_ms": 2900.0,
            "restarted": {"n3": pid}, "restarted_at_ms": 2910.0, "installed": reached and snap >= target,
            "follower_snapshot_index": snap, "follower_applied_index": applied,
            "catch_up": {"node": "n3", "pid": pid, "target": target,
                         "why": f"n1 compacted its log to {target} while n3 held at most 59",
                         "healed_at_ms": 2910.0, "wait_s": wait_s, "reached": reached,
                         "waited_ms": 800.0 if reached else wait_s * 1000, "applied_index": applied,
                         "snapshot_index": snap}}


def lag_ops(value: dict, start_s: float = 5.0, end_s: float = 23.0, first: int = 100) -> list[Op]:
    return [Op(first, int(start_s * S), "nemesis", "invoke", "snapshot-lag", value={"seed": 1}),
            Op(first + 1, int(end_s * S), "nemesis", "info", "snapshot-lag", value=value),
            Op(first + 2, int((end_s + 1) * S), "nemesis", "invoke", "stop-snapshot-lag"),
            Op(first + 3, int((end_s + 1.1) * S), "nemesis", "info", "stop-snapshot-lag",
               value={"healed": ["n1", "n2", "n3"], "resumed": [], "started": {}})]


def cluster(tmp_path: Path, *, installs: int | None, seconds_after_start: float = 0.5, lives_s: float = 15.0):
    """The healthy cluster, then n3 restarted (pid 102) holding up to 6; with INSTALLS it logs
    ``snapshot-installed index=INSTALLS`` SECONDS_AFTER_START after its start; it lives LIVES_S."""
    nodes = healthy(tmp_path)
    n3 = nodes["n3"]
    n3.start(entries=6, term=1, commit=6)  # pid 102: the restart the nemesis recorded
    n3.follower(1, "n1")
    start = n3.clock
    if installs is not None:
        n3.clock = start + seconds_after_start
        n3.log("snapshot-installed", index=installs, term=1, bytes=133, members="n1,n2,n3")
        n3.applied(term_entries(1, installs + 1, [put("register/1", 99)]))
    n3.clock = start + lives_s
    n3.shutdown(installs + 1 if installs is not None else 6)
    write_all(nodes)
    return read_cluster(tmp_path / "nodes")


def test_a_follower_that_never_catches_up_with_no_other_fault_is_invalid_naming_node_index_and_time(tmp_path):
    """The shape of the core.py:561 / messages.py:388 mutants: every InstallSnapshot refused."""
    history = HISTORY + lag_ops(lag_value(False))
    result = check_catch_up(cluster(tmp_path, installs=None), history)
    assert result["valid"] is False, result
    (v,) = result["violations"]
    assert (v["node"], v["pid"], v["target"], v["stuck_at"], v["waited_s"]) == ("n3", FOLLOWER_PID, 100, 60, 15.0)
    what = v["what"]
    assert "n3 (pid 102) did not catch up" in what
    assert "15 s later, with no other fault active, it was still stuck at index 60, below the committed index 100" in what
    assert "no snapshot installed" in what and "it never reached 100 in the 15.0 s that process ran" in what
    assert "history op 101" in what


def test_the_correct_build_shape_is_valid(tmp_path):
    """A real correct run: the follower installed the leader's snapshot 0.5 s after its restart."""
    history = HISTORY + lag_ops(lag_value(True, applied=100, snap=100), end_s=9.0)
    result = check_catch_up(cluster(tmp_path, installs=100), history)
    assert result["valid"] is True and result["caught_up"] == 1 and result["judged"] == 1, result
    assert "slowest 0.8 s" in result["explanation"]


def test_the_nodes_log_overrules_a_status_poll_that_missed_the_catch_up(tmp_path):
    # The poll said "not reached" (e.g. status timed out), but the follower's own log shows
    # the install 2 s after its start, within the 15 s bound: not a violation.
    history = HISTORY + lag_ops(lag_value(False, applied=-1, snap=-1))
    assert check_catch_up(cluster(tmp_path, installs=100, seconds_after_start=2.0), history)["valid"] is True


def test_reaching_the_target_only_after_the_bound_is_still_a_violation_and_says_so(tmp_path):
    history = HISTORY + lag_ops(lag_value(False))
    result = check_catch_up(cluster(tmp_path, installs=100, seconds_after_start=40.0, lives_s=50.0), history)
    assert result["valid"] is False
    assert "it reached 100 only 40.0 s after its start" in result["violations"][0]["what"]


def test_another_fault_during_the_wait_excuses_the_record(tmp_path):
    # A partition overlapping the follower's catch-up: it may be cut off, not judged.
    # The nemesis runs one op at a time: the partition starts before the lag and stops after it.
    partition = [Op(90, int(4 * S), "nemesis", "invoke", "start-partition", value=None),
                 Op(91, int(4.1 * S), "nemesis", "info", "start-partition",
                    value={"components": [["n3"], ["n1", "n2"]]})]
    history = HISTORY + partition + lag_ops(lag_value(False)) + [
        Op(200, int(30 * S), "nemesis", "invoke", "stop-partition"),
        Op(201, int(30.1 * S), "nemesis", "info", "stop-partition", value={})]
    result = check_catch_up(cluster(tmp_path, installs=None), history)
    assert result["valid"] is True and result["judged"] == 0, result
    assert "other faults active while it caught up: partition n3 | n1 n2" in result["explanation"]


def test_a_failed_restart_is_not_judged_here(tmp_path):
    history = HISTORY + lag_ops(lag_value(False, pid=None))
    result = check_catch_up(cluster(tmp_path, installs=None), history)
    assert result["valid"] is True and "not restarted" in result["explanation"]


def test_records_of_runs_stored_before_the_catch_up_record_are_judged_from_their_older_fields(tmp_path):
    value = lag_value(False)
    del value["catch_up"], value["follower_applied_index"]
    (record,) = catch_up_records(HISTORY + lag_ops(value))
    assert (record.node, record.pid, record.target, record.reached, record.wait_s) == \
        ("n3", FOLLOWER_PID, 100, False, LEGACY_WAIT_S)
    result = check_catch_up(cluster(tmp_path, installs=None), HISTORY + lag_ops(value))
    assert result["valid"] is False and "stuck at index 6" in result["violations"][0]["what"]  # from its log


def test_registered_in_every_runs_whitebox_set_and_nothing_to_judge_without_records(tmp_path):
    assert "catch-up" in NAMES
    nodes = healthy(tmp_path)
    write_all(nodes)
    results = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")
    assert results["catch-up"]["valid"] is True and "nothing to judge" in results["catch-up"]["explanation"]
    # ... and through check_whitebox a stuck follower fails the run's set
    stuck = check_whitebox(cluster(tmp_path / "b", installs=None), HISTORY + lag_ops(lag_value(False)), "register")
    assert stuck["catch-up"]["valid"] is False
