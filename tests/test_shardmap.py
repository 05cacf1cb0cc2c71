"""The shard map and rebalancing plan (ukehi/shardmap.py): placement, minimal movement,
membership steps that the Raft core accepts, throttling, and the strict JSON form."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from ukehi.raft.confchange import ConfChangeType, enter_config, leave_joint
from ukehi.raft.types import Membership
from ukehi.shardmap import (META_KEY, ShardMap, ShardMapError, ShardMove, group_of, hash_tag, meta_members,
                            move_steps, next_moves, placement, plan, request_keys, shard_of)

FIVE = [f"n{i}" for i in range(1, 6)]


def test_keys_map_to_shards_stably_and_evenly() -> None:
    assert shard_of("user:42", 16) == shard_of(b"user:42", 16)  # the same in every process
    counts = Counter(shard_of(f"k{i}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.15 * 1000 and min(counts.values()) > 0.85 * 1000, counts
    assert group_of(0) == 1  # group 0 is the metadata group


def test_a_hash_tag_places_a_key_by_the_tag_alone() -> None:
    # Redis Cluster's rule: the characters between the first "{" and the first "}" after it.
    assert hash_tag("lock/{fenced/0}") == "fenced/0"
    assert hash_tag(b"lock/{fenced/0}") == b"fenced/0"
    assert hash_tag("a{b}c{d}") == "b"  # the first tag only
    assert hash_tag("a{b{c}d") == "b{c"  # the first "}" after the first "{"
    for whole in ("fenced/0", "a{}b", "a{b", "a}b{", "}{x"):  # no tag, or an empty one: the whole key
        assert hash_tag(whole) == whole
    # The workload's lock and key share a shard at every shard count, while the tags spread.
    from workloads.fencing import key_name, lock_name

    for shards in (1, 4, 16, 256):
        for k in range(50):
            assert shard_of(lock_name(k), shards) == shard_of(key_name(k), shards), (k, shards)
    assert shard_of("x{fenced/1}y", 4096) == shard_of("fenced/1", 4096) == shard_of(b"{fenced/1}", 4096)
    assert len({shard_of(f"lock/{{t{i}}}", 16) for i in range(200)}) == 16
    # Untagged keys place as before tags existed (a stored map's keys do not move).
    from ukehi.partitioner import stable_hash64

    assert all(shard_of(f"k{i}", 16) == stable_hash64(f"k{i}") % 16 for i in range(100))
    # A map routes a tagged key to the tag's shard (node and client both route by shard_for).
    smap = ShardMap.initial(FIVE, shards=16, replication_factor=3)
    assert smap.owners("lock/{fenced/2}") == smap.owners("fenced/2")


def test_placement_depends_on_the_set_of_nodes_not_their_order() -> None:
    a = placement(FIVE, 16, 3)
    b = placement(list(reversed(FIVE)), 16, 3)
    assert a == b
    assert all(len(set(m)) == 3 for m in a)
    # every node serves some shards: 48 replica slots over 5 nodes
    per_node = Counter(n for m in a for n in m)
    assert set(per_node) == set(FIVE) and min(per_node.values()) >= 5, per_node


def test_adding_a_sixth_node_moves_replicas_only_to_it() -> None:
    before = ShardMap.initial(FIVE, shards=16, replication_factor=3)
    moves = plan(before, FIVE + ["n6"])
    assert moves, "a sixth node takes some replicas"
    for move in moves:
        assert move.add == ("n6",), move  # nothing moves between old nodes
        assert len(move.remove) == 1 and move.remove[0] in FIVE
    # Close to 1/6 of the replica slots, measured over many shards (16 is too few for a ratio).
    big = ShardMap.initial(FIVE, shards=1024, replication_factor=3)
    moved = sum(len(m.add) for m in plan(big, FIVE + ["n6"]))
    share = moved / (1024 * 3)
    assert 1 / 6 - 0.04 < share < 1 / 6 + 0.04, share


def test_removing_a_node_moves_only_its_replicas() -> None:
    before = ShardMap.initial(FIVE + ["n6"], shards=64, replication_factor=3)
    moves = plan(before, FIVE)
    assert {m.shard for m in moves} == set(before.shards_of("n6"))
    for move in moves:
        assert move.remove == ("n6",) and len(move.add) == 1


def test_a_move_is_learners_then_one_joint_swap_that_the_core_accepts() -> None:
    move = ShardMove(3, ("n1", "n2", "n3"), ("n1", "n3", "n6"))
    steps = move_steps(move)
    assert [[(c.op, c.node) for c in s] for s in steps] == [
        [(ConfChangeType.ADD_LEARNER, "n6")],
        [(ConfChangeType.ADD_VOTER, "n6"), (ConfChangeType.REMOVE, "n2")],
    ]
    m = enter_config(Membership(voters=frozenset(move.old)), steps[0])
    assert not m.joint and m.learners == {"n6"}
    m = enter_config(m, steps[1])
    # the swap runs through C_old,new: a majority of both sets decides
    assert m.joint and m.outgoing == {"n1", "n2", "n3"} and m.voters == {"n1", "n3", "n6"}
    assert leave_joint(m).voters == set(move.new)


def test_a_move_that_cannot_be_done_as_membership_changes_is_refused() -> None:
    with pytest.raises(ShardMapError, match="shard 2"):
        move_steps(ShardMove(2, ("n1", "n2"), ()))  # no voter would be left


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from([f"n{i}" for i in range(1, 9)]), min_size=3, max_size=8),
       st.sets(st.sampled_from([f"n{i}" for i in range(1, 9)]), min_size=3, max_size=8))
def test_any_rebalance_ends_at_the_target_through_valid_configurations(old: set[str], new: set[str]) -> None:
    current = ShardMap.initial(old, shards=8, replication_factor=3).with_nodes(new)
    target = placement(new, 8, 3)
    for move in plan(current, new):
        steps = move_steps(move)  # raises if the core would refuse a step
        assert steps
        current = current.after(move)
    assert [set(m) for m in current.members] == [set(m) for m in target]
    for gone in sorted(old - new):
        if gone in current.metadata_members:  # its metadata replica moves first
            dst = next(n for n in sorted(new) if n not in current.metadata_members)
            moving = current.with_meta_move(gone, dst)
            current = moving.meta_settled(set(current.metadata_members) - {gone} | {dst})
        current = current.without_node(gone)
    assert set(current.nodes) == new
    assert set(current.metadata_members) <= new


def test_epochs_grow_and_a_stale_plan_is_refused() -> None:
    m1 = ShardMap.initial(FIVE, shards=16, replication_factor=3)
    m2 = m1.with_nodes(FIVE + ["n6"])
    assert m2.epoch == m1.epoch + 1 and "n6" in m2.nodes and m2.members == m1.members
    move = plan(m2, FIVE + ["n6"])[0]
    m3 = m2.after(move)
    assert m3.epoch == m2.epoch + 1
    with pytest.raises(ShardMapError, match="older map"):
        m3.after(move)
    with pytest.raises(ShardMapError, match="still serves"):
        m3.without_node("n1")


def test_ownership_follows_the_map_and_refuses_requests_from_a_newer_map() -> None:
    m = ShardMap.initial(FIVE, shards=16, replication_factor=3)
    s = m.shard_for("k")
    owner = m.owners("k")[0]
    stranger = next(n for n in FIVE if n not in m.owners("k"))
    assert m.owns(owner, s, m.epoch) and m.owns(owner, s, m.epoch - 1 if m.epoch > 1 else 1)
    assert not m.owns(stranger, s, m.epoch)
    assert not m.owns(owner, s, m.epoch + 1)  # the client knows a newer map: ours is stale


def test_throttle_starts_at_most_limit_moves_one_per_shard() -> None:
    moves = [ShardMove(s, ("a",), ("b",)) for s in (1, 2, 2, 3, 4)]
    assert [m.shard for m in next_moves(moves, in_flight=[], limit=2)] == [1, 2]
    assert [m.shard for m in next_moves(moves, in_flight=[1], limit=3)] == [2, 3]
    assert next_moves(moves, in_flight=[7, 8], limit=2) == []


def test_the_json_form_round_trips_and_bad_maps_say_what_is_wrong() -> None:
    m = ShardMap.initial(FIVE, shards=4, replication_factor=3)
    assert ShardMap.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    bad = [
        ({"epoch": 1}, "exactly"),
        ({**m.to_dict(), "epoch": 0}, "epoch"),
        ({**m.to_dict(), "members": [["n1", "n1"]]}, "distinct"),
        ({**m.to_dict(), "members": [["n9"]]}, "not nodes of the cluster"),
        ({**m.to_dict(), "members": "n1"}, "members"),
        ({**m.to_dict(), "replication_factor": 9}, "replication_factor"),
        ({**m.to_dict(), "nodes": ["n1", "n1"]}, "repeat"),
    ]
    for obj, message in bad:
        with pytest.raises(ShardMapError, match=message):
            ShardMap.from_dict(obj)
    with pytest.raises(ShardMapError, match="add nodes or lower it"):
        ShardMap.initial(["n1", "n2"], shards=4, replication_factor=3)


def test_metadata_members_are_placed_like_a_shard_and_capped_by_the_nodes() -> None:
    five = [f"n{i}" for i in range(1, 6)]
    members = meta_members(five, 3)
    assert len(members) == 3 and set(members) <= set(five)
    assert meta_members(list(reversed(five)), 3) == members  # the set decides, not the order
    assert meta_members(["a", "b"], 3) == meta_members(["b", "a"], 2) and len(meta_members(["a", "b"], 3)) == 2
    # Adding a node only ever brings it in (minimal movement), never reshuffles the old ones.
    six = meta_members([*five, "n6"], 3)
    assert set(six) - set(members) <= {"n6"}
    with pytest.raises(ShardMapError):
        meta_members([], 3)


def test_request_keys_are_what_node_and_client_route_by() -> None:
    assert request_keys("put", {"key": "k", "value": 1}) == ["k"]
    assert request_keys("acquire", {"lock": "L", "owner": "o", "ttl_ms": 5}) == ["L"]
    assert request_keys("txn", {"ops": [["r", "a", None], ["w", "b", 1]]}) == ["a", "b"]
    assert request_keys("status", {}) is None and request_keys("transfer_leader", {}) is None
    assert META_KEY.startswith("\x00ukehi/")


def test_the_metadata_group_moves_one_replica_at_a_time_and_the_map_names_its_members() -> None:
    smap = ShardMap.initial(FIVE, shards=8, replication_factor=3)
    boot = meta_members(FIVE, 3)
    assert smap.metadata_members == boot and "meta" not in smap.to_dict()  # bootstrap: from the founders
    leaving = smap.draining(boot[0])
    assert leaving.meta_leaving == (boot[0],)
    dst = leaving.meta_target()
    assert dst is not None and dst not in boot and dst != boot[0]
    # The same target on every node: the partitioner's ranking of the staying nodes.
    ranked = meta_members([n for n in FIVE if n != boot[0]], 4)
    assert dst == next(n for n in ranked if n not in boot)
    with pytest.raises(ShardMapError, match="metadata members leaving"):
        leaving.rebalanced()
    moving = leaving.with_meta_move(boot[0], dst)
    assert moving.meta_move == (boot[0], dst) and moving.epoch == leaving.epoch + 1
    with pytest.raises(ShardMapError, match="already has a move"):
        moving.with_meta_move(boot[1], dst)
    with pytest.raises(ShardMapError, match="the source must be a member"):
        leaving.with_meta_move(dst, boot[0])
    settled = moving.meta_settled({*boot[1:], dst})
    assert settled.metadata_members == (*boot[1:], dst) and not settled.meta_move and not settled.meta_leaving
    assert ShardMap.from_dict(json.loads(json.dumps(settled.to_dict()))) == settled
    assert ShardMap.from_dict(json.loads(json.dumps(moving.to_dict()))) == moving
    # With the shards moved off it too, the leaving node is dropped, and the group keeps its members.
    for move in plan(settled, settled.target_nodes):
        settled = settled.after(move)
    done = settled.rebalanced()
    assert boot[0] not in done.nodes and done.metadata_members == (*boot[1:], dst)
    # A metadata member that serves no shard still cannot be dropped before its replica moves.
    first = meta_members(["a", "b", "c"], 1)[0]
    bare = ShardMap(1, 1, ("a", "b", "c"), ((next(n for n in "abc" if n != first),),))
    with pytest.raises(ShardMapError, match="metadata group"):
        bare.without_node(bare.metadata_members[0])
    with pytest.raises(ShardMapError, match="metadata members"):
        ShardMap.from_dict({**smap.to_dict(), "meta": ["n1", "n9"]})


def test_a_joining_node_names_the_cluster_up_to_itself() -> None:
    cluster = ShardMap.initial(["n1", "n2", "n3", "n4"], shards=4, replication_factor=3)
    # A founder (n1) that rejoins fresh with --join leaves itself out of its founders.
    rejoiner = ShardMap.initial(["n2", "n3", "n4"], shards=4, replication_factor=3)
    assert not rejoiner.same_cluster(cluster)
    assert rejoiner.same_cluster(cluster, joining="n1") and cluster.same_cluster(rejoiner, joining="n1")
    # Only up to that node: another founder missing is another cluster.
    assert not rejoiner.same_cluster(cluster, joining="n2")
    assert not ShardMap.initial(["n2", "n3", "n4"], shards=8, replication_factor=3).same_cluster(cluster, joining="n1")
