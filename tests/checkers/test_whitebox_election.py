"""White-box election safety: at most one leader per term, from the nodes' became-leader lines."""

from __future__ import annotations

from checkers.whitebox import check_election_safety, check_whitebox, read_cluster
from whitebox_nodes import HISTORY, healthy, write_all


def test_healthy_cluster_passes_every_whitebox_checker(tmp_path):
    write_all(healthy(tmp_path))
    results = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")
    assert {name: r["valid"] for name, r in results.items()} == {name: True for name in results}
    # the six node-data checkers, config-agreement, catch-up and replica-agreement
    assert len(results) == 9


def test_two_leaders_in_one_term_are_caught_and_named(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].leader(2)
    nodes["n3"].leader(2)  # a double vote let both win term 2
    nodes["n1"].leader(3)
    write_all(nodes)
    result = check_election_safety(read_cluster(tmp_path / "nodes"))
    assert result["valid"] is False
    assert [v["term"] for v in result["violations"]] == [2]
    assert result["violations"][0]["nodes"] == ["n2", "n3"]
    assert "term 2 had 2 leaders" in result["explanation"] and "n2" in result["explanation"]


def test_leaders_of_different_terms_and_a_repeated_line_are_fine(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].leader(2)
    nodes["n2"].leader(2)  # the same node logging the same term twice is one leader
    nodes["n3"].leader(3)
    write_all(nodes)
    result = check_election_safety(read_cluster(tmp_path / "nodes"))
    assert result["valid"] is True, result
    assert result["leaders"] == {"1": ["n1"], "2": ["n2"], "3": ["n3"]}


def test_no_logs_is_unknown_not_a_pass(tmp_path):
    (tmp_path / "nodes" / "n1").mkdir(parents=True)
    assert check_election_safety(read_cluster(tmp_path / "nodes"))["valid"] == "unknown"


def test_a_node_that_votes_twice_in_one_term_across_a_restart_is_caught_with_no_second_leader(tmp_path):
    # forget-vote's footprint: n3 grants term 2 to n2, crashes, restarts without the vote and
    # grants term 2 to n1. Neither candidate needs to win for the rule to be broken.
    nodes = healthy(tmp_path)
    nodes["n3"].log("voted", term=2, candidate="n2")
    nodes["n3"].start(entries=6, term=2, commit=6)
    nodes["n3"].log("voted", term=2, candidate="n3")  # and it may vote for itself too
    nodes["n3"].log("voted", term=2, candidate="n1")
    write_all(nodes)
    result = check_election_safety(read_cluster(tmp_path / "nodes"))
    assert result["valid"] is False
    assert len(result["violations"]) == 1  # one broken term, reported once
    v = result["violations"][0]
    assert (v["term"], v["nodes"], v["candidates"]) == (2, ["n3"], ["n2", "n3"])
    assert "n3 voted for n2" in result["explanation"] and "after a restart" in result["explanation"]


def test_one_vote_per_term_repeated_or_renewed_each_term_is_fine(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n3"].log("voted", term=2, candidate="n2")
    nodes["n3"].start(entries=6, term=2, commit=6)
    nodes["n3"].log("voted", term=2, candidate="n2")  # the same vote after a restart
    nodes["n3"].log("voted", term=3, candidate="n1")  # a new term, a new vote
    nodes["n2"].log("voted", term=3, candidate="n2")  # another node's vote in that term
    write_all(nodes)
    result = check_election_safety(read_cluster(tmp_path / "nodes"))
    assert result["valid"] is True, result
    assert "over 4 vote(s)" in result["explanation"]
