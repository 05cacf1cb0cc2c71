"""`ukehi kv status` on a sharded cluster: the node's shards, and a leader per shard with --all."""

from __future__ import annotations

from ukehi.kvcli import shard_leader_lines, shard_lines


def status(node: str, shards: dict[str, tuple[str, int]], *, meta: bool = True) -> dict:
    return {
        "id": node, "epoch": 1, "shard_count": 3, "replication_factor": 2, "shard_map_committed": meta,
        "metadata_members": ["n1", "n2"],
        "metadata": {"role": "leader", "term": 2, "leader": "n1", "members": ["n1", "n2"]} if meta else None,
        "shards": {s: {"group": int(s) + 1, "role": role, "term": term, "leader": node if role == "leader" else "n9",
                       "commit_index": 5, "applied_index": 5, "members": ["n1", "n2"]}
                   for s, (role, term) in shards.items()},
    }


def test_one_node_lists_its_shards_and_the_metadata_group() -> None:
    lines = shard_lines(status("n1", {"2": ("follower", 3), "0": ("leader", 4)}))
    assert lines[0] == "shard map: epoch 1, 3 shards, replication factor 2; this node hosts 2:"
    assert lines[1].split()[:4] == ["shard", "0", "group", "1"] and "leader    term   4" in lines[1]
    assert lines[2].split()[:2] == ["shard", "2"] and "leader n9" in lines[2]
    assert lines[3].startswith("  metadata group 0: leader term 2 leader n1") and lines[3].endswith("the map: committed")
    outside = shard_lines(status("n3", {"1": ("follower", 1)}, meta=False))
    assert outside[-1] == "  metadata group 0 on n1,n2 (not this node)"


def test_all_nodes_give_a_leader_per_shard_at_the_highest_term() -> None:
    lines = shard_leader_lines([
        status("n1", {"0": ("leader", 3), "1": ("leader", 2)}),  # n1 still thinks it leads shard 1 (term 2)
        status("n2", {"0": ("follower", 3), "1": ("leader", 5)}),
    ])
    assert lines[0] == "leaders per shard:"
    assert "shard    0 leader n1" in lines[1] and "term 3" in lines[1] and "hosts n1,n2" in lines[1]
    assert "shard    1 leader n2" in lines[2] and "term 5" in lines[2]
    assert "shard    2 leader none" in lines[3] and "(none answered)" in lines[3]


def test_a_metadata_move_shows_in_flight_and_on_the_node_that_runs_it() -> None:
    st = {**status("n1", {"0": ("leader", 4)}), "metadata_move": ["n2", "n3"],
          "moving": {"-1": {"from": "n2", "to": "n3", "step": "catch-up"}, "0": {"from": "n1", "to": "n4",
                                                                                  "step": "joint"}}}
    lines = shard_lines(st)
    assert "  move in flight (epoch 1): metadata group 0 from n2 to n3" in lines
    assert lines[-2] == "  this node runs the move of the metadata group from n2 to n3: step catch-up"
    assert lines[-1] == "  this node runs the move of shard 0 from n1 to n4: step joint"
