"""Partition topologies as graphs (networkx), turned into grudges.

A *grudge* maps each node to the nodes it must not hear from; the partition
nemesis turns it into DROP rules on that node's incoming traffic. Topologies
are computed as a directed "can hear from" graph; the grudge is its
complement. Symmetric topologies give symmetric grudges; ``one_way`` keeps
only one direction of each cut, so A cannot hear B while B still hears A.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import networkx as nx

Grudge = dict[str, list[str]]


def _complete(nodes: Sequence[str]) -> nx.DiGraph:
    g = nx.complete_graph(nodes, create_using=nx.DiGraph)
    return g


def _cut(nodes: Sequence[str], groups: Sequence[Sequence[str]]) -> nx.DiGraph:
    """Nodes hear only from nodes of their own group."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for group in groups:
        g.add_edges_from((a, b) for a in group for b in group if a != b)
    return g


def halves(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    mid = len(shuffled) // 2
    return _cut(nodes, [shuffled[:mid], shuffled[mid:]])


def isolate_one(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    victim = rng.choice(list(nodes))
    return _cut(nodes, [[victim], [n for n in nodes if n != victim]])


def random_minority(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    size = rng.randint(1, max(1, (len(nodes) - 1) // 2))
    minority = rng.sample(list(nodes), size)
    return _cut(nodes, [minority, [n for n in nodes if n not in minority]])


def minority_third(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    """Fewer than a third of the nodes ((n-1)//3, at least one) cut off from the rest."""
    size = max(1, (len(nodes) - 1) // 3)
    cut = rng.sample(list(nodes), size)
    return _cut(nodes, [cut, [n for n in nodes if n not in cut]])


def isolate(nodes: Sequence[str], group: Sequence[str]) -> nx.DiGraph:
    """``group`` on one side, every other node on the other (e.g. the current leaders)."""
    return _cut(nodes, [list(group), [n for n in nodes if n not in group]])


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    """Every node hears a majority (itself included), and no two nodes hear the same majority.

    Nodes sit on a shuffled ring; each hears the window of a majority of nodes
    around itself (Jepsen's majorities-ring). With 3 nodes every window is the
    whole cluster, so the result is no partition at all.
    """
    ring = list(nodes)
    rng.shuffle(ring)
    n = len(ring)
    majority = n // 2 + 1
    before = (majority - 1) // 2
    after = (majority - 1) - before
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for i, node in enumerate(ring):
        for d in range(-before, after + 1):
            if d:
                g.add_edge(node, ring[(i + d) % n])
    return g


def bridge(nodes: Sequence[str], rng: random.Random) -> nx.DiGraph:
    """Two halves that cannot hear each other, and one node that hears (and is heard by) both."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    middle = shuffled[0]
    rest = shuffled[1:]
    half = len(rest) // 2
    left, right = rest[:half], rest[half:]
    g = _cut(nodes, [left + [middle], right + [middle]])
    return g


TOPOLOGIES: dict[str, Callable[[Sequence[str], random.Random], nx.DiGraph]] = {
    "halves": halves,
    "one": isolate_one,
    "majorities-ring": majorities_ring,
    "bridge": bridge,
    "minority": random_minority,
    "minority-third": minority_third,
}


def grudge(hears: nx.DiGraph, one_way: bool = False, rng: random.Random | None = None) -> Grudge:
    """The complement of ``hears``: who must drop whom.

    With ``one_way`` each cut pair keeps one direction (chosen by ``rng``):
    only one of the two drops the other's packets.
    """
    nodes = sorted(hears.nodes)
    cut = {n: sorted(m for m in nodes if m != n and not hears.has_edge(n, m)) for n in nodes}
    if one_way:
        rng = rng or random.Random(0)
        for a in nodes:
            for b in list(cut[a]):
                if a < b and b in cut[a] and a in cut[b]:
                    keep_a = rng.random() < 0.5
                    (cut[b] if keep_a else cut[a]).remove(a if keep_a else b)
    return {n: peers for n, peers in cut.items() if peers}


def components(g: Grudge, nodes: Sequence[str]) -> list[list[str]]:
    """Groups of nodes that can all still hear each other both ways (for messages and plots)."""
    hears = _complete(nodes)
    for node, peers in g.items():
        for peer in peers:
            if hears.has_edge(node, peer):
                hears.remove_edge(node, peer)
    both = nx.Graph()
    both.add_nodes_from(nodes)
    both.add_edges_from((a, b) for a, b in hears.edges if hears.has_edge(b, a))
    return sorted(sorted(c) for c in nx.connected_components(both))
