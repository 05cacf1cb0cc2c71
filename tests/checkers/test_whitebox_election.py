"""White-box election safety: at most one leader per term, from the nodes' became-leader lines."""

from __future__ import annotations

from checkers.whitebox import check_election_safety, check_whitebox, read_cluster
from whitebox_nodes import HISTORY, healthy, write_all


def test_healthy_cluster_passes_every_whitebox_checker(tmp_path):
    write_all(healthy(tmp_path))
    results = check_whitebox(read_cluster(tmp_path / "nodes"), HISTORY, "register")
    assert {name: r["valid"] for name, r in results.items()} == {name: True for name in results}
    assert len(results) == 6


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
