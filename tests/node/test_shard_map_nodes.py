"""The shard map's node set as data (ukehi/shardmap.py): adding a node records its address and
starts a rebalance whose plan only moves replicas to it; removing one marks it leaving until its
replicas are gone; the cluster keeps its identity (its founders) through both; the JSON form stays
the old one while the node set never changed."""

from __future__ import annotations

import pytest

from ukehi.shardmap import ShardMap, ShardMapError, ShardMove, placement, rebalance_plan

FIVE = ["n1", "n2", "n3", "n4", "n5"]


def finish(smap: ShardMap) -> ShardMap:
    """Carry out the rebalance one replica at a time, as the shard leaders do."""
    while rebalance_plan(smap):
        move = rebalance_plan(smap)[0]
        src, dst = move.remove[0], move.add[0]
        smap = smap.with_move(move.shard, src, dst)
        voters = (set(smap.members[move.shard]) - {src}) | {dst}
        smap = smap.settled(move.shard, voters)
    return smap.rebalanced()


def test_adding_a_node_records_its_address_and_moves_replicas_only_to_it():
    m1 = ShardMap.initial(FIVE, 16, 3)
    assert rebalance_plan(m1) == []  # not rebalancing: no plan, whatever the members
    m2 = m1.with_node("n6", "127.0.0.1:7006")
    assert (m2.epoch, m2.rebalancing, m2.address_of("n6"), m2.members) == (2, True, "127.0.0.1:7006", m1.members)
    pending = rebalance_plan(m2)
    assert pending and all(m.add == ("n6",) and len(m.remove) == 1 for m in pending)
    with pytest.raises(ShardMapError, match="not done"):
        m2.rebalanced()
    done = finish(m2)
    assert not done.rebalancing and "n6" in done.nodes and done.address_of("n6") == "127.0.0.1:7006"
    assert [set(g) for g in done.members] == [set(g) for g in placement(FIVE + ["n6"], 16, 3)]
    assert done.same_cluster(m1) and done.founders == m1.founders
    assert ShardMap.from_dict(done.to_dict()) == done
    with pytest.raises(ShardMapError, match="give its address"):
        m1.with_node("n7")


def test_removing_a_node_drains_it_then_drops_it_and_its_address():
    m = finish(ShardMap.initial(FIVE, 8, 3).with_node("n6", "127.0.0.1:7006"))
    leaving = m.draining("n6")
    assert leaving.leaving == ("n6",) and "n6" in leaving.nodes and leaving.rebalancing
    assert all(m.remove == ("n6",) for m in rebalance_plan(leaving))
    gone = finish(leaving)
    assert "n6" not in gone.nodes and gone.address_of("n6") is None and gone.leaving == ()
    assert [set(g) for g in gone.members] == [set(g) for g in placement(FIVE, 8, 3)]
    # A founder can leave too; the cluster is still named by its founders.
    no_n5 = finish(gone.draining("n5"))
    assert "n5" not in no_n5.nodes and no_n5.same_cluster(ShardMap.initial(FIVE, 8, 3))
    assert no_n5.to_dict()["founders"] == FIVE
    with pytest.raises(ShardMapError, match="remain for replication factor 3"):
        ShardMap.initial(["n1", "n2", "n3"], 4, 3).draining("n3")


def test_the_json_form_is_the_old_one_until_the_node_set_changes():
    m1 = ShardMap.initial(FIVE, 4, 3)
    assert set(m1.to_dict()) == {"epoch", "replication_factor", "nodes", "members"}
    m2 = m1.with_node("n6", "127.0.0.1:7006")
    d = m2.to_dict()
    assert d["addresses"] == {"n6": "127.0.0.1:7006"} and d["rebalancing"] is True and d["founders"] == FIVE
    assert ShardMap.from_dict(d) == m2
    # Another cluster (other founders) is not the same cluster, whatever its nodes are now.
    other = ShardMap.initial(FIVE[:4] + ["n6"], 4, 3)
    assert not other.same_cluster(m2) and not other.same_cluster(m1)


@pytest.mark.parametrize("change, message", [
    ({"addresses": {"n9": "127.0.0.1:1"}}, "not a node of the cluster"),
    ({"addresses": {"n1": "nowhere"}}, "is not HOST:PORT"),
    ({"leaving": ["n9"]}, "are not nodes of the cluster"),
    ({"rebalancing": "yes"}, "true or false"),
    ({"founders": ["n1", "n1"]}, "founder names repeat"),
])
def test_bad_node_set_fields_are_refused_when_a_map_is_read(change, message):
    with pytest.raises(ShardMapError, match=message):
        ShardMap.from_dict({**ShardMap.initial(FIVE, 4, 3).to_dict(), **change})


def test_a_shard_needing_two_replicas_moved_takes_two_moves():
    # Two nodes at once: a shard may lose two members; each move is one replica.
    m = ShardMap.initial(FIVE, 16, 3).with_node("n6", "127.0.0.1:7006").with_node("n7", "127.0.0.1:7007")
    two = [mv.shard for mv in rebalance_plan(m) if len(mv.add) == 2]
    assert two == [2, 12]  # what the partitioner gives for these names
    after_one = m.settled(2, (set(m.members[2]) - {rebalance_plan(m)[2].remove[0]}) | {rebalance_plan(m)[2].add[0]})
    assert next(mv for mv in rebalance_plan(after_one) if mv.shard == 2) == ShardMove(
        2, after_one.members[2], next(mv for mv in rebalance_plan(m) if mv.shard == 2).new)
    done = finish(m)
    assert [set(g) for g in done.members] == [set(g) for g in placement(FIVE + ["n6", "n7"], 16, 3)]
