"""Election safety: at most one leader per term (Raft §5.2), from ``event=became-leader`` lines."""

from __future__ import annotations

from typing import Any, Mapping

from .common import nothing_to_judge, result
from .nodedata import NodeData


def check_election_safety(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    leaders: dict[int, dict[str, str]] = {}  # term -> node -> when it became leader
    for node in cluster.values():
        for process in node.processes:
            for e in process.all("became-leader"):
                try:
                    term = int(e.get("term", ""))
                except ValueError:
                    continue
                leaders.setdefault(term, {}).setdefault(node.name, e.get("ts", "?"))
    if not any(n.processes for n in cluster.values()):
        return nothing_to_judge("no node logs to read")
    violations = []
    for term in sorted(leaders):
        if len(leaders[term]) > 1:
            who = ", ".join(f"{n} (at {ts})" for n, ts in sorted(leaders[term].items(), key=lambda x: x[1]))
            violations.append({"term": term, "nodes": sorted(leaders[term]),
                               "what": f"term {term} had {len(leaders[term])} leaders: {who}"})
    return result(violations, f"one leader per term over {len(leaders)} term(s) with a leader",
                  leaders={str(t): sorted(v) for t, v in sorted(leaders.items())})
