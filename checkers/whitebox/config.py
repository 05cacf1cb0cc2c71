"""Configuration agreement: members that applied the same log report the same configuration.

Raft's configuration is part of the replicated log (and of each snapshot, for the entries a
snapshot covers), so two members that have applied the log up to the same point hold the
same configuration. A node that keeps a stale one (for instance a snapshot that records an
older configuration than the entries it covers, loaded again at a restart) may count votes
and acknowledgements from the wrong nodes, which clients see only much later, if at all.

The membership nemesis (nemeses/membership.py) records, after every accepted change, each
member's own ``status`` configuration once all of them have applied what the leader had
committed (``agreement.views``, with the ``caught_up_to`` index and the leader's name); one
of the followers was just restarted from its own snapshot. This checker compares every
member that reached that index with the leader. Members that had not caught up in time are
listed, not judged. A run without such records has nothing here to disagree about.
"""

from __future__ import annotations

from typing import Any, Iterable

from .common import result

MEMBERSHIP_CHANGES = ("add-node", "remove-node")
FIELDS = ("voters", "outgoing", "learners")


def _shape(view: dict[str, Any]) -> dict[str, list[str]]:
    return {k: sorted(view.get(k) or []) for k in FIELDS}


def check_config_agreement(history: Iterable[Any]) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []
    compared = 0
    behind: list[str] = []
    for op in history:
        if op.is_client or op.type == "invoke" or op.f not in MEMBERSHIP_CHANGES:
            continue
        agreement = (op.value or {}).get("agreement") if isinstance(op.value, dict) else None
        if not isinstance(agreement, dict) or not agreement.get("views"):
            continue
        views, leader, index = agreement["views"], agreement.get("leader"), agreement.get("caught_up_to")
        if leader not in views or index is None:
            continue
        compared += 1
        want = _shape(views[leader])
        restarted = (agreement.get("restarted") or {}).get("node")
        for node, view in sorted(views.items()):
            if node == leader:
                continue
            if int(view.get("applied_index") or -1) < int(index):
                behind.append(f"{node} at {op.f} (index {index})")
                continue
            got = _shape(view)
            if got != want:
                after = " (restarted from its snapshot just before)" if node == restarted else ""
                violations.append({
                    "node": node, "leader": leader, "index": index, "op": op.index,
                    "what": f"after {op.f} {(op.value or {}).get('node')} (history op {op.index}), {node}{after} "
                            f"applied up to {view.get('applied_index')} (>= {index}) but reports voters "
                            f"{got['voters']}, outgoing {got['outgoing']}, learners {got['learners']}; the "
                            f"leader {leader} reports voters {want['voters']}, outgoing {want['outgoing']}, "
                            f"learners {want['learners']}"})
    if not compared:
        return {"valid": True, "violations": [], "explanation": "no membership change recorded members' views "
                                                                 "(no membership nemesis): nothing to compare"}
    text = f"after {compared} membership change(s), every member that applied the leader's commit index " \
           f"reported the leader's configuration"
    if behind:
        text += f"; not caught up in time, not judged: {', '.join(behind[:5])}"
    return result(violations, text, compared=compared)


__all__ = ["check_config_agreement"]
