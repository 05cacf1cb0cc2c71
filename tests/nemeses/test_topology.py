import random

import pytest

from nemeses.topology import TOPOLOGIES, components, grudge

NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def heard_by(g, node, nodes):
    return {m for m in nodes if m != node and m not in g.get(node, [])} | {node}


@pytest.mark.parametrize("seed", range(20))
def test_halves_is_symmetric_and_splits_in_two(seed):
    g = grudge(TOPOLOGIES["halves"](NODES5, random.Random(seed)))
    comps = components(g, NODES5)
    assert sorted(len(c) for c in comps) == [2, 3]
    for a, peers in g.items():
        for b in peers:
            assert a in g[b], "halves must cut both directions"


@pytest.mark.parametrize("seed", range(20))
def test_one_isolates_exactly_one(seed):
    g = grudge(TOPOLOGIES["one"](NODES5, random.Random(seed)))
    comps = components(g, NODES5)
    assert sorted(len(c) for c in comps) == [1, 4]


@pytest.mark.parametrize("nodes", [NODES5, [f"n{i}" for i in range(1, 8)]])
@pytest.mark.parametrize("seed", range(10))
def test_majorities_ring_everyone_hears_a_distinct_majority(nodes, seed):
    g = grudge(TOPOLOGIES["majorities-ring"](nodes, random.Random(seed)))
    majority = len(nodes) // 2 + 1
    views = [frozenset(heard_by(g, n, nodes)) for n in nodes]
    assert all(len(v) == majority for v in views)
    assert len(set(views)) == len(nodes), "no two nodes may hear the same majority"


@pytest.mark.parametrize("seed", range(20))
def test_bridge_has_one_node_hearing_both_sides(seed):
    g = grudge(TOPOLOGIES["bridge"](NODES5, random.Random(seed)))
    bridges = [n for n in NODES5 if n not in g]
    assert len(bridges) == 1
    others = [n for n in NODES5 if n != bridges[0]]
    assert all(len(heard_by(g, n, NODES5)) == 3 for n in others)


@pytest.mark.parametrize("seed", range(20))
def test_minority_is_a_strict_minority(seed):
    g = grudge(TOPOLOGIES["minority"](NODES5, random.Random(seed)))
    sizes = sorted(len(c) for c in components(g, NODES5))
    assert len(sizes) == 2 and sizes[0] <= 2 and sizes[1] >= 3


@pytest.mark.parametrize("seed", range(20))
def test_one_way_keeps_exactly_one_direction_of_each_cut(seed):
    rng = random.Random(seed)
    hears = TOPOLOGIES["halves"](NODES5, rng)
    sym = grudge(hears)
    one = grudge(hears, one_way=True, rng=rng)
    for a, peers in sym.items():
        for b in peers:
            if a < b:
                assert (b in one.get(a, [])) != (a in one.get(b, []))
