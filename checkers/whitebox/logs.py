"""Log matching (Raft §5.3) and committed-prefix agreement, over the WALs at the end of a run.

- Same index, same term on two nodes: the same command and fencing token, and every
  earlier index both hold is identical too (the Log Matching Property).
- Committed entries: every index at or below a node's commit index (``NodeData.commit_end``,
  a lower bound) holds the same entry on every node whose commit index reaches it; a
  snapshot's (index, term) agrees with those entries.

Uncommitted suffixes may differ and are not compared beyond the Log Matching rule;
indexes compacted into a snapshot or lost to a CorruptionPolicy are simply absent; entries
after an AlertAndContinue hole (``stray``) are not part of the log Raft uses and are skipped.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping

from .common import nothing_to_judge, result
from .nodedata import NodeData


def _pair_problems(a: NodeData, b: NodeData) -> list[dict[str, Any]]:
    common = sorted(set(a.entries) & set(b.entries))
    same_term = [i for i in common if a.entries[i].term == b.entries[i].term]
    out = []
    differing = [i for i in same_term if a.entries[i] != b.entries[i]]
    if differing:
        i = differing[0]
        out.append({"nodes": [a.name, b.name], "index": i, "term": a.entries[i].term, "count": len(differing),
                    "what": f"{a.name} and {b.name} hold index {i} in term {a.entries[i].term} with different "
                            f"entries ({a.name}: {a.entries[i].describe()}; {b.name}: {b.entries[i].describe()})"
                            + (f"; {len(differing) - 1} more such index(es)" if len(differing) > 1 else "")})
    if same_term:
        top = same_term[-1]
        below = [i for i in common if i < top and a.entries[i].term != b.entries[i].term]
        if below:
            i = below[0]
            out.append({"nodes": [a.name, b.name], "index": i, "matching_index": top, "count": len(below),
                        "what": f"{a.name} and {b.name} agree on index {top} (term {a.entries[top].term}) but "
                                f"not on the earlier index {i} (terms {a.entries[i].term} and {b.entries[i].term})"
                                + (f"; {len(below) - 1} more such index(es)" if len(below) > 1 else "")})
    return out


def check_log_matching(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    nodes = [n for n in cluster.values() if n.has_data]
    if not nodes:
        return nothing_to_judge("no node data directory to read")
    violations: list[dict[str, Any]] = []
    for a, b in combinations(nodes, 2):
        violations.extend(_pair_problems(a, b))
    # Committed entries agree wherever two nodes both count them committed.
    committed: dict[int, list[tuple[str, Any]]] = {}
    for node in nodes:
        end = node.commit_end
        for index, entry in node.entries.items():
            if index <= end:
                committed.setdefault(index, []).append((node.name, entry))
    runs: list[tuple[list[int], Any]] = []  # consecutive differing indexes split the nodes the same way
    for index in sorted(committed):
        holders = committed[index]
        if len({e for _, e in holders}) < 2:
            continue
        groups: dict[Any, list[str]] = {}
        for name, entry in holders:
            groups.setdefault(entry, []).append(name)
        split = tuple(sorted(tuple(g) for g in groups.values()))
        if runs and runs[-1][1][0] == split and runs[-1][0][-1] == index - 1:
            runs[-1][0].append(index)
        else:
            runs.append(([index], (split, holders)))
    for indexes, (split, holders) in runs:
        first, last = indexes[0], indexes[-1]
        where = f"committed index {first} differs" if first == last else f"committed indexes {first}..{last} differ"
        violations.append({"index": first, "last_index": last, "nodes": sorted(n for n, _ in holders),
                           "what": f"{where} between " + " and ".join("{" + ",".join(g) + "}" for g in split)
                                   + f"; at {first}: "
                                   + "; ".join(f"{n} (commit >= {cluster[n].commit_end}) has {e.describe()}"
                                               for n, e in holders)})
    for node in nodes:
        s = node.snapshot_index
        if not s:
            continue
        for other in nodes:
            entry = other.entries.get(s)
            if other is not node and entry is not None and other.commit_end >= s and entry.term != node.snapshot_term:
                violations.append({"index": s, "nodes": [node.name, other.name],
                                   "what": f"{node.name}'s snapshot covers index {s} in term {node.snapshot_term}, "
                                           f"but {other.name} committed term {entry.term} at that index"})
    sizes = ", ".join(f"{n.name}: {len(n.entries)} entries after snapshot {n.snapshot_index}, "
                      f"commit >= {n.commit_end}" for n in nodes)
    return result(violations, f"logs agree where Raft requires it ({sizes})",
                  commit={n.name: n.commit_end for n in nodes})


def check_log_order(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    """Fencing tokens and terms in the logs: terms never go backwards, tokens strictly increase.

    Along each node's log: terms do not decrease; non-zero fencing tokens strictly increase
    and carry their entry's term in the high 32 bits (a leader starts its term at
    ``(term, 0)``); no entry's term is above the node's saved term. Across nodes: one token
    names one entry. Across restarts: a process never starts at a term below one an earlier
    process of the same incarnation logged (terms are persisted before they are acted on).
    """
    nodes = [n for n in cluster.values() if n.has_data or n.processes]
    if not nodes:
        return nothing_to_judge("no node data to read")
    violations: list[dict[str, Any]] = []
    owners: dict[int, tuple[str, int, Any]] = {}
    for node in nodes:
        prev = None
        for index in sorted(node.entries):
            e = node.entries[index]
            if prev is not None:
                if e.term < prev.term:
                    violations.append({"node": node.name, "index": index, "what":
                                       f"{node.name}'s log goes back from term {prev.term} at index {prev.index} "
                                       f"to term {e.term} at index {index}"})
                if e.token and prev.token and e.token <= prev.token:
                    violations.append({"node": node.name, "index": index, "what":
                                       f"{node.name}'s fencing token does not increase: {prev.token:#x} at index "
                                       f"{prev.index}, {e.token:#x} at index {index} (terms {prev.term}, {e.term})"})
            if e.token and e.token >> 32 != e.term:
                violations.append({"node": node.name, "index": index, "what":
                                   f"{node.name} index {index}: token {e.token:#x} is of term {e.token >> 32}, "
                                   f"the entry's term is {e.term}"})
            if e.token:
                seen = owners.get(e.token)
                if seen is None:
                    owners[e.token] = (node.name, index, e)
                elif seen[1] != index or seen[2] != e:
                    violations.append({"nodes": [seen[0], node.name], "index": index, "what":
                                       f"token {e.token:#x} names two entries: index {seen[1]} on {seen[0]} "
                                       f"({seen[2].describe()}) and index {index} on {node.name} ({e.describe()})"})
            prev = e
        if node.hard_term is not None and node.entries:
            last = node.entries[max(node.entries)]
            if last.term > node.hard_term:
                violations.append({"node": node.name, "index": last.index, "what":
                                   f"{node.name}'s log holds term {last.term} at index {last.index}, above its "
                                   f"saved term {node.hard_term}"})
        best: dict[int, tuple[int, int | None]] = {}  # incarnation -> (highest term logged, by pid)
        for process in node.processes:
            seen = best.get(process.incarnation)
            replay = process.replay or {}
            try:
                term = int(replay.get("term", ""))
            except ValueError:
                term = None
            if seen is not None and term is not None and term < seen[0]:
                violations.append({"node": node.name, "pid": process.pid, "what":
                                   f"{node.name} restarted (pid {process.pid}, {process.started_at}) at term "
                                   f"{term}, below term {seen[0]} that its earlier process (pid {seen[1]}) "
                                   "had reached"})
            top = max(process.max_term(), term or 0)
            if seen is None or top > seen[0]:
                best[process.incarnation] = (top, process.pid)
    return result(violations, f"terms never go backwards and fencing tokens strictly increase "
                              f"({len(owners)} tokens on {len(nodes)} node(s))")
