"""The dependency graph: typed edges between transactions, SCCs, short cycles.

Nodes ``0..n-1`` are transactions. Real-time order is not stored as edges between every
pair of ordered transactions (that is quadratic in concurrency): each completed
transaction ``T`` gets a *barrier* node ``n + j`` (its rank among completions), barriers
are chained in completion order, ``T -> barrier(T)``, and the last barrier before ``U``'s
invocation points at ``U``. So ``T`` reaches ``U`` through barriers exactly when ``T``
completed before ``U`` began, with three edges per transaction. Cycles found through
barriers are folded back into one ``realtime`` edge between transactions.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import Sequence

WW, WR, RW, PROCESS, REALTIME = 1, 2, 4, 8, 16
EDGE_NAMES = {WW: "ww", WR: "wr", RW: "rw", PROCESS: "process", REALTIME: "realtime"}
DEPENDENCIES = WW | WR | RW


class Graph:
    """Edges as parallel lists (source, target, type bit); ``n`` transactions, ``size`` nodes."""

    __slots__ = ("n", "size", "src", "dst", "typ")

    def __init__(self, n: int) -> None:
        self.n = n
        self.size = n
        self.src: list[int] = []
        self.dst: list[int] = []
        self.typ: list[int] = []

    def add(self, a: int, b: int, t: int) -> None:
        if a != b:
            self.src.append(a)
            self.dst.append(b)
            self.typ.append(t)

    def add_many(self, srcs: Sequence[int], dsts: Sequence[int], t: int) -> None:
        """Edges ``srcs[i] -> dsts[i]`` of type ``t`` (self-loops dropped by the caller)."""
        self.src.extend(srcs)
        self.dst.extend(dsts)
        self.typ.extend([t] * len(srcs))

    def add_realtime(self, invokes: Sequence[int], completes: Sequence[int | None]) -> None:
        """Real-time order through barrier nodes; ``invokes[t]``/``completes[t]`` are
        history positions (``None``: never completed)."""
        done = sorted((c, t) for t, c in enumerate(completes) if c is not None)
        if not done:
            return
        base = self.size
        self.size += len(done)
        times = [c for c, _ in done]
        src, dst = self.src, self.dst
        before = len(src)
        for j, (_, t) in enumerate(done):
            src.append(t)
            dst.append(base + j)
            if j:
                src.append(base + j - 1)
                dst.append(base + j)
        for t, inv in enumerate(invokes):
            j = bisect_left(times, inv) - 1  # last completion strictly before the invocation
            if j >= 0:
                src.append(base + j)
                dst.append(t)
        self.typ.extend([REALTIME] * (len(src) - before))

    def __len__(self) -> int:
        return len(self.src)


def strongly_connected(size: int, src: Sequence[int], dst: Sequence[int]) -> list[list[int]]:
    """Components with more than one node (iterative Tarjan over an adjacency list)."""
    adj: list[list[int]] = [[] for _ in range(size)]
    for a, b in zip(src, dst):
        adj[a].append(b)
    index = [0] * size
    low = [0] * size
    on_stack = [False] * size
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 1
    for root in range(size):
        if index[root] or not adj[root]:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, iter(adj[root]))]
        while work:
            v, it = work[-1]
            pushed = False
            for w in it:
                if not index[w]:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    work.append((w, iter(adj[w])))
                    pushed = True
                    break
                if on_stack[w] and index[w] < low[v]:
                    low[v] = index[w]
            if pushed:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                if low[v] < low[u]:
                    low[u] = low[v]
            if low[v] == index[v]:
                w = stack.pop()
                on_stack[w] = False
                if w != v:
                    comp = [w]
                    while w != v:
                        w = stack.pop()
                        on_stack[w] = False
                        comp.append(w)
                    out.append(comp)
    return out


def component_subgraphs(graph: Graph, comps: list[list[int]]) -> list[dict[int, dict[int, int]]]:
    """For each component, ``{u: {v: type bits}}`` over the edges inside it."""
    comp_of = [-1] * graph.size
    for c, comp in enumerate(comps):
        for v in comp:
            comp_of[v] = c
    subs: list[dict[int, dict[int, int]]] = [{v: {} for v in comp} for comp in comps]
    for a, b, t in zip(graph.src, graph.dst, graph.typ):
        c = comp_of[a]
        if c >= 0 and comp_of[b] == c:
            row = subs[c][a]
            row[b] = row.get(b, 0) | t
    return subs


# --- cycle search ---------------------------------------------------------------------------
#
# A search looks for the shortest cycle through an *anchor* edge of a given type, the rest
# of the cycle using only ``path_mask`` edges, by breadth-first search over (node, state).
# The state is what the cycle's class depends on: whether the last edge was rw, how many
# rw edges so far (0, 1, 2+), whether two rw edges were adjacent, and whether an edge of
# the ``require`` type was used.

ANY, NONADJACENT, ADJACENT = "any", "nonadjacent", "adjacent"


def _accept(state: int, anchor_rw: bool, rule: str, require: int) -> bool:
    last_rw = state & 1
    rw = (state >> 1) & 3
    adjacent = (state >> 3) & 1
    special = (state >> 4) & 1
    if require and not special:
        return False
    if rule == NONADJACENT:
        return rw + anchor_rw >= 2 and not adjacent and not (last_rw and anchor_rw)
    if rule == ADJACENT:
        return bool(adjacent or (last_rw and anchor_rw))
    return True


def _step(state: int, t: int, rule: str, require: int) -> int:
    last_rw = state & 1
    rw = (state >> 1) & 3
    adjacent = (state >> 3) & 1
    special = (state >> 4) & 1
    if t == RW:
        if last_rw:
            if rule == NONADJACENT:
                return -1
            adjacent = 1
        rw = min(rw + 1, 2)
        last_rw = 1
    else:
        last_rw = 0
    if t & require:
        special = 1
    return last_rw | (rw << 1) | (adjacent << 3) | (special << 4)


def sub_components(sub: dict[int, dict[int, int]], mask: int) -> dict[int, int]:
    """Component ids of the nodes of ``sub`` that lie on a cycle of ``mask`` edges."""
    nodes = list(sub)
    ids = {v: i for i, v in enumerate(nodes)}
    src: list[int] = []
    dst: list[int] = []
    for u, row in sub.items():
        for v, bits in row.items():
            if bits & mask:
                src.append(ids[u])
                dst.append(ids[v])
    return {nodes[i]: c for c, comp in enumerate(strongly_connected(len(nodes), src, dst)) for i in comp}


def find_cycle(sub: dict[int, dict[int, int]], anchor_type: int, path_mask: int, rule: str = ANY,
               require: int = 0, n: int | None = None, max_anchors: int = 64,
               deadline: float | None = None, same: dict[int, int] | None = None,
               only_same: bool = False, max_visits: int = 1 << 62) -> list[tuple[int, int, int]] | None:
    """A short cycle ``[(a, b, type), ...]`` through an edge of ``anchor_type``, or None.

    At most ``max_anchors`` anchors are tried, those whose ends share a component of
    ``same`` first (a cycle through them surely exists when ``same`` is the components
    of the path edges plus the anchor's type); ``only_same`` skips the others (when no
    cycle can pass through them). The first cycle found is returned (the shortest
    through its anchor). ``n``: nodes ``>= n`` are real-time barriers (never anchors).
    ``max_visits`` bounds the states one breadth-first search may visit.
    """
    anchors = []
    for a in sub:
        if n is not None and a >= n:
            continue
        for b, bits in sub[a].items():
            t = bits & anchor_type
            if t:
                inside = same is not None and a in same and same.get(b) == same[a]
                if inside or not only_same:
                    anchors.append((0 if inside else 1, a, b, t & -t))
    anchors.sort()
    for tried, (_, a, b, t) in enumerate(anchors):
        if tried >= max_anchors or (deadline is not None and time.monotonic() > deadline):
            return None
        anchor_rw = t == RW
        # after the anchor: last edge rw or not, and the required type seen or not; the
        # anchor's own rw is counted by _accept, not in the state's rw count
        start = (1 if anchor_rw else 0) | ((1 if t & require else 0) << 4)
        found = _bfs(sub, a, b, start, path_mask, rule, require, anchor_rw, max_visits)
        if found is not None:
            return [(a, b, t)] + found
    return None


def _bfs(sub: dict[int, dict[int, int]], a: int, b: int, start: int, path_mask: int, rule: str,
         require: int, anchor_rw: bool, max_visits: int) -> list[tuple[int, int, int]] | None:
    if b == a:
        return None
    parent: dict[tuple[int, int], tuple[int, int, int] | None] = {(b, start): None}
    queue = deque([(b, start)])
    while queue:
        u, s = queue.popleft()
        for v, bits in sub[u].items():
            usable = bits & path_mask
            while usable:
                t = usable & -usable
                usable ^= t
                s2 = _step(s, t, rule, require)
                if s2 < 0:
                    continue
                if v == a:
                    if _accept(s2, anchor_rw, rule, require):
                        path = [(u, v, t)]
                        node = (u, s)
                        while parent[node] is not None:
                            pu, ps, pt = parent[node]  # type: ignore[misc]
                            path.append((pu, node[0], pt))
                            node = (pu, ps)
                        path.reverse()
                        return path
                    continue
                key = (v, s2)
                if key not in parent:
                    parent[key] = (u, s, t)
                    queue.append(key)
        if len(parent) > max_visits:
            return None
    return None


def fold_barriers(cycle: list[tuple[int, int, int]], n: int) -> list[tuple[int, int, int]]:
    """Replace runs of edges through barrier nodes (``>= n``) by one realtime edge."""
    out: list[tuple[int, int, int]] = []
    start = None
    for a, b, t in cycle:
        if b >= n:
            if a < n:
                start = a
            continue
        if a >= n:
            out.append((start, b, REALTIME))  # type: ignore[arg-type]
            start = None
        else:
            out.append((a, b, t))
    return out


def classify(cycle: list[tuple[int, int, int]]) -> str:
    """Adya/Elle's name for a cycle from its edge types."""
    types = [t for _, _, t in cycle]
    rw = types.count(RW)
    if rw == 0:
        base = "G1c" if WR in types else "G0"
    elif rw == 1:
        base = "G-single"
    else:
        k = len(types)
        adjacent = any(types[i] == RW and types[(i + 1) % k] == RW for i in range(k))
        base = "G2-item" if adjacent else "G-nonadjacent"
    if REALTIME in types:
        return base + "-realtime"
    if PROCESS in types:
        return base + "-process"
    return base


# Searches in order, per level: (anchor type, path mask without the level's extra types, rule)
_BASE_SEARCHES = (
    (WW, WW, ANY),                 # G0
    (WR, WW | WR, ANY),            # G1c
    (RW, WW | WR, ANY),            # G-single: the anchor is the only rw
    (RW, WW | WR | RW, NONADJACENT),
    (RW, WW | WR | RW, ADJACENT),  # G2-item
)
_LEVELS = ((0, 0), (PROCESS, PROCESS), (PROCESS | REALTIME, REALTIME))


def cycles_in_component(sub: dict[int, dict[int, int]], n: int, max_anchors: int = 64,
                        deadline: float | None = None) -> list[list[tuple[int, int, int]]]:
    """Short cycles of each class found in one component, barrier runs folded.

    Cycles of dependency edges only (G0 ... G2-item) are searched first; only when a
    component has none are cycles that need process order searched, then real-time ones:
    a cycle of a weaker class already rules out every model the stronger ones would.
    G0 and G1c anchors are taken only inside components of the ww (ww+wr) subgraph, where
    such a cycle surely exists; other searches try anchors inside components of their
    edge types first, and bound each search's visits so a huge component stays cheap.
    """
    budget = max(20_000, 4 * len(sub))
    for extra, require in _LEVELS:
        found: dict[str, list[tuple[int, int, int]]] = {}
        comps: dict[int, dict[int, int]] = {}
        for anchor, mask, rule in _BASE_SEARCHES:
            full = mask | extra
            if full not in comps:
                comps[full] = sub_components(sub, full | anchor)
            exact = anchor in (WW, WR) and not extra
            if exact and not comps[full]:
                continue
            cycle = find_cycle(sub, anchor, full, rule, require, n, max_anchors, deadline,
                               same=comps[full], only_same=exact, max_visits=budget)
            if cycle is not None:
                folded = fold_barriers(cycle, n)
                found.setdefault(classify(folded), folded)
        if found:
            return list(found.values())
    # every component has a cycle; if the bounded searches missed it, take any one
    cycle = find_cycle(sub, DEPENDENCIES, DEPENDENCIES | PROCESS | REALTIME, ANY, 0, n,
                       max_anchors=1 << 30, deadline=None)
    return [fold_barriers(cycle, n)] if cycle is not None else []
