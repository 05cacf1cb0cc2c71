"""White-box state machine safety: what nodes applied, and what they keep across restarts."""

from __future__ import annotations

from checkers.whitebox import check_state_machine_safety, read_cluster
from whitebox_nodes import LOG, NOOP, Node, healthy, put, term_entries, write_all


def check(tmp_path):
    return check_state_machine_safety(read_cluster(tmp_path / "nodes"))


def test_two_nodes_applying_different_commands_at_one_index_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].applied(term_entries(2, 7, [put("register/7", 70)]))
    nodes["n2"].applied(term_entries(2, 7, [put("register/7", 70)]))
    nodes["n3"].applied(term_entries(3, 7, [put("register/7", 71)]))  # e.g. it took a stale leader's entry
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    v = result["violations"][0]
    assert v["index"] == 7 and v["nodes"] == ["n1", "n2", "n3"]
    assert "index 7 was applied differently: term 2" in result["explanation"] and "term 3" in result["explanation"]


def test_a_restarted_node_reapplying_another_command_is_caught(tmp_path):
    nodes = healthy(tmp_path, ("n1",))
    n1 = nodes["n1"]
    n1.start(entries=6, term=1, commit=6)
    n1.applied(LOG[:2] + term_entries(1, 3, [put("register/2", 21)], seq=3))  # index 3 is not what it was
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    assert "index 3 was applied differently" in result["explanation"]
    assert "n1 (pid 101)" in result["explanation"] and "n1 (pid 102)" in result["explanation"]


def test_a_committed_wal_entry_that_differs_from_what_was_applied_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    # n3's WAL says index 7 is one command (committed: hard state 7), everyone applied another
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(2, 7, [put("register/7", 70)]))
        nodes[name].applied(term_entries(2, 7, [put("register/7", 70)]))
    nodes["n3"].wal(term_entries(2, 7, [put("register/7", 77)])).hard_state(2, 7)
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    assert "n3's WAL holds committed index 7 as term 2" in result["explanation"]
    assert "value=77" in result["explanation"]


def test_forgetting_applied_entries_across_a_restart_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    # n2 applied up to 6, then restarted with a log ending at 4: acknowledged bytes never hit the disk
    nodes["n2"].shutdown(6).start(entries=4, term=1, commit=4, last_index=4)
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    assert "n2 had applied up to index 6 (pid 101) but restarted (pid 102" in result["explanation"]
    assert "log ending at 4" in result["explanation"]


def test_commit_going_back_and_a_clamped_commit_are_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].start(entries=6, term=1, commit=6).start(entries=6, term=1, commit=3)
    nodes["n3"].start(entries=6, term=1, commit=6).log("commit-clamped", level="warning",
                                                        saved_commit=9, last_index=6)
    write_all(nodes)
    text = check(tmp_path)["explanation"]
    assert "n2's commit index went back from 6 to 3" in text
    assert "n3 restarted (pid 102) with saved commit index 9 but a log ending at 6" in text


def test_a_policy_cut_excuses_a_shorter_log_after_restart(tmp_path):
    nodes = healthy(tmp_path)
    n2 = nodes["n2"]
    n2.shutdown(6).start(entries=4, term=1, commit=6, last_index=4)
    n2.log("corruption-report", level="warning", policy="truncate-to-last-good", segment="wal-00000001.seg",
           offset=300, kind="crc-mismatch", action="cut", index=5)
    n2.log("recovering", level="warning", refuse_votes_until=6, last_good_index=4)
    n2.applied(LOG[4:])  # caught up from the leader: the same entries again
    # a crash's torn tail is not an excuse, but it only cut what was never applied
    nodes["n3"].start(entries=6, term=1, commit=6).log("corruption-report", kind="torn-tail", action="cut")
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is True, result


def test_wiped_node_rejoining_from_nothing_is_not_a_loss(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n3"].start(join=True).applied(LOG)  # start_fresh: data dir wiped, node added again
    nodes["n1"].applied(term_entries(1, 7, [NOOP], seq=7))
    write_all(nodes)
    assert check(tmp_path)["valid"] is True


def test_a_restart_after_the_disk_nemesis_truncated_the_wal_is_excused(tmp_path):
    from checkers.history import Op
    from checkers.whitebox import check_whitebox

    nodes = healthy(tmp_path)
    # the nemesis cut n2's WAL file short: replay sees a torn tail and cuts it silently
    nodes["n2"].shutdown(6).start(entries=4, term=1, commit=4, last_index=4).log(
        "corruption-report", kind="torn-tail", action="cut")
    write_all(nodes)
    record = {"n2": {"changes": [{"offset": 300, "before_len": 90, "after_len": 0}], "pid": 102,
                     "kind": "truncate", "segment": "wal-00000001.seg"}}
    damage = [Op(90, 900, "nemesis", "invoke", "corrupt-wal", None, {"kind": "truncate"}),
              Op(91, 901, "nemesis", "info", "corrupt-wal", None, {"kind": "truncate", "nodes": record})]
    assert check(tmp_path)["valid"] is False  # without the history, the loss is unexplained
    results = check_whitebox(read_cluster(tmp_path / "nodes"), damage, "register")
    assert results["state-machine-safety"]["valid"] is True, results["state-machine-safety"]


def test_a_run_of_indexes_applied_two_ways_is_one_violation(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].applied(term_entries(2, 7, [put("register/7", v) for v in (70, 71, 72)]))
    nodes["n2"].applied(term_entries(3, 7, [put("register/7", v) for v in (80, 81, 82)]))
    write_all(nodes)
    result = check(tmp_path)
    assert len(result["violations"]) == 1
    v = result["violations"][0]
    assert (v["index"], v["last_index"]) == (7, 9)
    assert result["explanation"].startswith("indexes 7..9 were applied differently (at 7: term 2")


def _lossy_restart(node, *, saved_commit: int, last_index: int):
    """A restart whose WAL truncate-to-last-good cut below the saved commit (recovering)."""
    node.start(entries=last_index, term=2, commit=saved_commit, last_index=last_index)
    node.log("corruption-report", level="warning", policy="truncate-to-last-good", segment="wal-00000001.seg",
             offset=3157, kind="crc-mismatch", action="cut", index=last_index + 1)
    return node.log("recovering", level="warning", refuse_votes_until=saved_commit + 10,
                    last_good_index=last_index)


def test_a_commit_saved_while_catching_up_after_a_cut_is_not_going_back(tmp_path):
    # Sim seed 1037 (correct build): n3 loaded commit 51 over a WAL cut at 45; the core starts
    # from 45 while recovering, n3 saved commit 47 with its next term change and was power-cut
    # before saving more; it restarted cleanly from 47. 47 is above the 45 it held: no loss.
    nodes = healthy(tmp_path)
    n3 = nodes["n3"]
    n3.start(entries=60, term=2, commit=51)
    _lossy_restart(n3, saved_commit=51, last_index=45)
    n3.start(entries=129, term=4, commit=47, last_index=129)
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is True, result


def test_commit_below_what_a_lossy_start_held_still_goes_back(tmp_path):
    # The same restart with a commit below the cut log's end (45): the node lost a commit it held.
    nodes = healthy(tmp_path)
    n3 = nodes["n3"]
    n3.start(entries=60, term=2, commit=51)
    _lossy_restart(n3, saved_commit=51, last_index=45)
    n3.start(entries=129, term=4, commit=40, last_index=129)
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    assert "n3's commit index went back from 45 to 40" in result["explanation"]
