"""White-box log matching and log order (terms, fencing tokens), over hand-made WALs."""

from __future__ import annotations

from checkers.whitebox import check_log_matching, check_log_order, read_cluster
from whitebox_nodes import LOG, NOOP, E, Node, corrupt, healthy, put, term_entries, token, write_all


def matching(tmp_path):
    return check_log_matching(read_cluster(tmp_path / "nodes"))


def order(tmp_path):
    return check_log_order(read_cluster(tmp_path / "nodes"))


def test_same_index_and_term_with_another_command_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    # n3's entry 7 in term 2 says something else than n1's and n2's entry 7 in term 2
    nodes["n1"].wal(term_entries(2, 7, [NOOP]))
    nodes["n2"].wal(term_entries(2, 7, [NOOP]))
    nodes["n3"].wal(term_entries(2, 7, [put("register/9", 99)]))
    write_all(nodes)
    result = matching(tmp_path)
    assert result["valid"] is False
    v = result["violations"][0]
    assert v["index"] == 7 and v["term"] == 2 and "n3" in v["nodes"]
    assert "index 7 in term 2 with different entries" in result["explanation"]


def test_agreeing_on_a_later_index_but_not_an_earlier_one_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7) + term_entries(2, 8, [NOOP]))
    nodes["n2"].wal(term_entries(3, 7, [NOOP]) + term_entries(2, 8, [NOOP]))
    write_all(nodes)
    result = matching(tmp_path)
    assert result["valid"] is False
    assert any(v.get("matching_index") == 8 and v["index"] == 7 for v in result["violations"]), result


def test_a_committed_index_that_differs_between_nodes_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    # n1 and n2 committed 7 (term 2); n3 committed a different 7 (term 3) and says so
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(2, 7, [put("register/7", 70)])).hard_state(2, 7)
    nodes["n3"].wal(term_entries(3, 7, [put("register/7", 71)])).hard_state(3, 7)
    write_all(nodes)
    result = matching(tmp_path)
    assert result["valid"] is False
    assert any(v["index"] == 7 and "committed index 7 differs between {n1,n2} and {n3}" in v["what"]
               for v in result["violations"]), result


def test_an_uncommitted_suffix_of_an_older_term_may_differ(tmp_path):
    nodes = healthy(tmp_path)
    # n3 led term 2 alone (partitioned) and kept its uncommitted tail; n1 led term 3 and committed 7, 8
    nodes["n3"].wal(term_entries(2, 7, [NOOP, put("register/8", 1)])).hard_state(2, 6)
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(3, 7, [NOOP, put("register/8", 2)])).hard_state(3, 8)
    write_all(nodes)
    assert matching(tmp_path)["valid"] is True, matching(tmp_path)
    assert order(tmp_path)["valid"] is True, order(tmp_path)


def test_a_compacted_prefix_and_an_alert_and_continue_hole_are_not_differences(tmp_path):
    nodes = healthy(tmp_path, ("n1",))
    nodes["n1"].wal(term_entries(2, 7, [NOOP, put("register/8", 8)])).hard_state(2, 8)
    # n2 compacted everything up to 4 into a snapshot; its WAL may start anywhere below 5
    nodes["n2"] = Node(tmp_path, "n2").snapshot(4, 1).wal(LOG[3:] + term_entries(2, 7, [NOOP, put("register/8", 8)]))
    nodes["n2"].hard_state(2, 8).start(entries=4, snapshot_index=4, term=2, commit=8)
    # n3 (alert-and-continue) skipped a damaged entry 7 and keeps a stale entry 8 after the hole
    nodes["n3"] = Node(tmp_path, "n3").wal(LOG + term_entries(1, 7, [NOOP, put("register/8", 1)], seq=7))
    nodes["n3"].hard_state(2, 6).start(policy="alert-and-continue", entries=6, term=2, commit=6)
    corrupt(nodes["n3"], 7)
    write_all(nodes)
    cluster = read_cluster(tmp_path / "nodes")
    assert sorted(cluster["n3"].stray) == [8] and max(cluster["n3"].entries) == 6
    result = matching(tmp_path)
    assert result["valid"] is True, result
    assert result["commit"] == {"n1": 8, "n2": 8, "n3": 6}
    assert order(tmp_path)["valid"] is True


def test_fencing_token_that_does_not_increase_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].wal([E(7, 1, put("register/7", 7), token(1, 3))])  # token 3 again after 6
    write_all(nodes)
    result = order(tmp_path)
    assert result["valid"] is False
    assert "n1's fencing token does not increase" in result["explanation"]
    assert "index 7" in result["explanation"]


def test_token_of_another_term_and_term_going_back_are_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].wal([E(7, 1, NOOP, token(2, 1))])
    nodes["n3"].wal(term_entries(3, 7, [NOOP]) + [E(8, 2, NOOP, token(3, 9))])
    write_all(nodes)
    text = order(tmp_path)["explanation"]
    assert "n2 index 7: token 0x200000001 is of term 2, the entry's term is 1" in text
    assert "n3's log goes back from term 3 at index 7 to term 2 at index 8" in text


def test_one_token_on_two_entries_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].wal([E(7, 2, NOOP, token(2, 1))])
    nodes["n2"].wal([E(7, 2, NOOP, token(2, 1)), E(8, 2, put("register/1", 5), token(2, 2))])
    nodes["n3"].wal([E(7, 2, put("register/1", 6), token(2, 2))])  # same token as n2's index 8
    write_all(nodes)
    result = order(tmp_path)
    assert result["valid"] is False
    assert "token 0x200000002 names two entries" in result["explanation"]


def test_restart_at_a_lower_term_is_caught_and_a_wiped_rejoin_is_not(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].follower(4, "n1").start(entries=6, term=2, commit=6)  # it had reached term 4
    nodes["n3"].follower(4, "n1").start(join=True)  # wiped and added again: starts from nothing
    write_all(nodes)
    result = order(tmp_path)
    assert result["valid"] is False
    assert len(result["violations"]) == 1
    assert "n2 restarted" in result["explanation"] and "at term 2, below term 4" in result["explanation"]


def test_a_run_of_differing_committed_indexes_is_one_violation(tmp_path):
    nodes = healthy(tmp_path)
    for name in ("n1", "n2"):
        nodes[name].wal(term_entries(2, 7, [put("register/7", v) for v in (70, 71, 72)])).hard_state(2, 9)
    nodes["n3"].wal(term_entries(3, 7, [put("register/7", v) for v in (80, 81, 82)])).hard_state(3, 9)
    write_all(nodes)
    committed = [v for v in matching(tmp_path)["violations"] if "committed" in v["what"]]
    assert len(committed) == 1
    assert committed[0]["what"].startswith("committed indexes 7..9 differ between {n1,n2} and {n3}")
