"""Election safety (Raft §5.2): at most one leader per term, and the vote it rests on.

Two readings of the nodes' logs: ``event=became-leader`` lines (two leaders of one term is
the violation clients may never see), and ``event=voted`` lines, which a node writes once a
vote is durable and before it sends it. A node that votes for two candidates in one term,
even across a restart, broke the rule every leader's majority relies on, whether or not a
second leader came of it (a forgotten vote often elects nobody: the first candidate may
already have lost its own election by then).
"""

from __future__ import annotations

from typing import Any, Mapping

from .common import nothing_to_judge, result
from .nodedata import NodeData


def _term(e: Mapping[str, str]) -> int | None:
    try:
        return int(e.get("term", ""))
    except ValueError:
        return None


def check_election_safety(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    leaders: dict[int, dict[str, str]] = {}  # term -> node -> when it became leader
    for node in cluster.values():
        for process in node.processes:
            for e in process.all("became-leader"):
                term = _term(e)
                if term is not None:
                    leaders.setdefault(term, {}).setdefault(node.name, e.get("ts", "?"))
    if not any(n.processes for n in cluster.values()):
        return nothing_to_judge("no node logs to read")
    violations = []
    for term in sorted(leaders):
        if len(leaders[term]) > 1:
            who = ", ".join(f"{n} (at {ts})" for n, ts in sorted(leaders[term].items(), key=lambda x: x[1]))
            violations.append({"term": term, "nodes": sorted(leaders[term]),
                               "what": f"term {term} had {len(leaders[term])} leaders: {who}"})
    votes = 0
    for node in cluster.values():
        found, counted = _double_votes(node)
        violations.extend(found)
        votes += counted
    return result(violations, f"one leader per term over {len(leaders)} term(s) with a leader; "
                              f"one candidate per node and term over {votes} vote(s)",
                  leaders={str(t): sorted(v) for t, v in sorted(leaders.items())})


def _double_votes(node: NodeData) -> tuple[list[dict[str, Any]], int]:
    """Terms in which ``node`` voted for two candidates: ([violation], votes read).

    Votes are compared within one incarnation: a node wiped and added again is a new member
    with a new hard state (it is removed from the configuration first).
    """
    out: list[dict[str, Any]] = []
    first: dict[tuple[int, int], tuple[str, str, Any]] = {}  # (incarnation, term) -> candidate, ts, pid
    reported: set[tuple[int, int]] = set()
    counted = 0
    for process in node.processes:
        for e in process.all("voted"):
            term, candidate = _term(e), e.get("candidate")
            if term is None or not candidate:
                continue
            counted += 1
            key = (process.incarnation, term)
            if key not in first:
                first[key] = (candidate, e.get("ts", "?"), process.pid)
                continue
            was, ts, pid = first[key]
            if candidate != was and key not in reported:
                reported.add(key)
                restart = " after a restart" if pid != process.pid else ""
                out.append({"term": term, "nodes": [node.name], "candidates": [was, candidate],
                            "what": f"{node.name} voted for {was} (at {ts}) and{restart} for {candidate} "
                                    f"(at {e.get('ts', '?')}) in term {term}: a vote must be kept, "
                                    f"durably, for the whole term"})
    return out, counted
