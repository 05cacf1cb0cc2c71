"""The shard map's replica moves as data (ukehi/shardmap.py): recorded per shard, at most one at
a time, settled from the group's voters, in a JSON form that reads back and stays the old form
when no move is in flight."""

from __future__ import annotations

import pytest

from ukehi.shardmap import ShardMap, ShardMapError

NODES = ["n1", "n2", "n3", "n4", "n5"]


def test_a_move_is_recorded_then_settled_from_the_voters_each_in_the_next_epoch():
    m1 = ShardMap.initial(NODES, 8, 3)
    shard = 3
    src = m1.members[shard][1]
    dst = next(n for n in NODES if n not in m1.members[shard])
    m2 = m1.with_move(shard, src, dst)
    assert (m2.epoch, m2.members, m2.moves) == (2, m1.members, ((shard, src, dst),))
    assert m2.move_of(shard) == (shard, src, dst) and m2.move_of(0) is None
    assert m2.joining(dst) == {shard} and shard not in m2.shards_of(dst)
    with pytest.raises(ShardMapError, match="already has a move in flight"):
        m2.with_move(shard, src, dst)
    voters = (set(m1.members[shard]) - {src}) | {dst}
    m3 = m2.settled(shard, voters)
    # The new member takes the old one's place; the others keep theirs; the move is gone.
    expected = tuple(dst if n == src else n for n in m1.members[shard])
    assert (m3.epoch, m3.members[shard], m3.moves) == (3, expected, ())
    assert all(m3.members[s] == m1.members[s] for s in range(8) if s != shard)
    assert m3.same_cluster(m1) and not m3.same_cluster(ShardMap.initial(NODES, 4, 3))
    # Settling to the members it has (an undone move) only clears the record.
    undone = m2.settled(shard, set(m1.members[shard]))
    assert undone.members == m1.members and undone.moves == () and undone.epoch == 3


def test_the_json_form_carries_moves_only_when_there_are_some():
    m1 = ShardMap.initial(NODES, 4, 3)
    assert "moves" not in m1.to_dict()  # the form metadata groups committed before moves existed
    assert ShardMap.from_dict(m1.to_dict()) == m1
    dst = next(n for n in NODES if n not in m1.members[0])
    m2 = m1.with_move(0, m1.members[0][0], dst)
    assert m2.to_dict()["moves"] == [[0, m1.members[0][0], dst]]
    assert ShardMap.from_dict(m2.to_dict()) == m2


@pytest.mark.parametrize("moves, message", [
    ([[0, "n9", "n4"]], "the source must be a member"),
    ([[9, "n1", "n4"]], "the map has shards 0 .. 3"),
    ([[0, "n3", "n1"], [0, "n4", "n5"]], "at most one move per shard"),
    ([[0, "n1"]], "list of \\[shard, from, to\\]"),
])
def test_impossible_moves_are_refused_when_a_map_is_read(moves, message):
    m1 = ShardMap.initial(NODES, 4, 3).to_dict()
    assert sorted(m1["members"][0]) == ["n2", "n3", "n4"]  # what the moves above are written against
    with pytest.raises(ShardMapError, match=message):
        ShardMap.from_dict({**m1, "moves": moves})
