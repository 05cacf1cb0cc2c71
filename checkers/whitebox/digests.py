"""Checker ``replica-agreement``: replicas that applied the same log hold the same state.

Every replica that applies a consistency-check entry (``ukehi kv checksum``; the harness
commits one per Raft group after the final phase, harness/consistency.py) logs
``event=state-digest group=G index=I digest=D keys=K``: the digest of its whole key-value
state (data, fences, locks, clock, last token, applied index) right after that index.
Snapshots log digests too: the maker the digest of the bytes it saved
(``event=snapshot-created``), and every node that restores one the digest of the state it
restored (``snapshot-installed`` from a leader, ``snapshot-restored`` from its own disk at
start), at the snapshot's index. A restore that loses or changes part of the state (a lock's
owner read from the wrong field) so shows at once, even if the state converges again later.
Raft makes every replica apply the same commands in the same order, so at one (group, index)
every digest must be the same; two digests there mean one replica's state machine holds
something else than the log says (a shard copied without the writes made during its move, a
snapshot restored without part of its contents, an apply that differs between the leader's
path and a follower's). CockroachDB runs the same check in production (its consistency
queue compares replica checksums computed at one Raft index).

Excused, not judged: digests logged by a node process after its WAL replay kept a hole
or skipped entries (a CorruptionPolicy that loses entries on purpose: the node's state
then differs by design, which the corruption-policy checker judges), until the node's
data directory is next wiped. Reads only the node logs, so it works for sharded runs too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from .nodedata import read_log, split_processes

#: replay actions after which a node's state may differ from the log on purpose (a hole)
HOLE_ACTIONS = frozenset({"dropped", "skipped", "kept"})
#: log events that carry the digest of a node's whole state at an index (module doc)
DIGEST_EVENTS = ("state-digest", "snapshot-created", "snapshot-installed", "snapshot-restored")


def _excused(process_events: Iterable[Mapping[str, str]]) -> str | None:
    for e in process_events:
        ev = e.get("event")
        if ev == "log-hole":
            return f"log-hole from index {e.get('missing_from')}"
        if ev == "corruption-report" and e.get("action") in HOLE_ACTIONS:
            return f"corruption-report {e.get('kind')} {e.get('action')}"
    return None


def digests_of(node: str, events: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(judged, excused) digest records of one node's log."""
    judged: list[dict[str, Any]] = []
    excused: list[dict[str, Any]] = []
    reason: str | None = None
    incarnation = None
    for process in split_processes(events):
        if process.incarnation != incarnation:
            incarnation, reason = process.incarnation, None  # a wiped node starts clean
        reason = reason or _excused(process.events)
        for e in process.events:
            if e.get("event") not in DIGEST_EVENTS or "digest" not in e:
                continue
            try:
                rec = {"node": node, "pid": process.pid, "group": int(e.get("group") or 0),
                       "index": int(e["index"]), "digest": e["digest"], "keys": int(e.get("keys") or 0),
                       "line": int(e.get("_line") or 0), "event": e["event"]}
            except (KeyError, ValueError):
                continue
            (excused if reason else judged).append({**rec, "excused": reason} if reason else rec)
    return judged, excused


def check_replica_agreement(logs: Mapping[str, list[dict[str, str]]]) -> dict[str, Any]:
    """Judge the state digests of every node's log: {node: parsed events (read_log)}."""
    at: dict[tuple[int, int], list[dict[str, Any]]] = {}
    excused_all: list[dict[str, Any]] = []
    for node, events in logs.items():
        judged, excused = digests_of(node, events)
        excused_all += excused
        for rec in judged:
            at.setdefault((rec["group"], rec["index"]), []).append(rec)
    disagreements = []
    for (group, index), recs in sorted(at.items()):
        if len({r["digest"] for r in recs}) > 1:
            disagreements.append({"group": group, "index": index,
                                  "replicas": [{k: r[k] for k in ("node", "pid", "digest", "keys", "event")}
                                               for r in recs]})
    compared = sum(1 for recs in at.values() if len(recs) > 1)
    out: dict[str, Any] = {"checkpoints": len(at), "compared": compared,
                           "digests": sum(len(r) for r in at.values()), "excused": excused_all[:20]}
    if disagreements:
        first = disagreements[0]
        held = "; ".join(f"{r['node']} (pid {r['pid']}) digest {r['digest']}"
                         + (f" with {r['keys']} keys" if r["event"] == "state-digest" else f" ({r['event']})")
                         for r in first["replicas"])
        out.update(valid=False, disagreements=disagreements[:20],
                   explanation=f"replicas of Raft group {first['group']} hold different states after applying the "
                               f"same log up to index {first['index']}: {held}"
                               + (f"; {len(disagreements) - 1} more checkpoint(s) disagree" if len(disagreements) > 1
                                  else ""))
        return out
    out["valid"] = True
    if not compared:
        out["note"] = ("nothing compared: no consistency-check entry was applied by two replicas "
                       "(no checksums.jsonl, or the check found no leader)")
    return out


def replica_agreement_checker(run_dir: str | Path, nodes: Iterable[str]) -> Any:
    """The checker in the harness's shape: reads ``<run>/nodes/<node>/node.log`` when called."""
    def check(history: Any = None, options: Any = None) -> dict[str, Any]:
        base = Path(run_dir) / "nodes"
        names = list(dict.fromkeys([*nodes, *(sorted(p.name for p in base.iterdir() if p.is_dir())
                                              if base.is_dir() else [])]))
        return check_replica_agreement({n: read_log(base / n / "node.log") for n in names})
    return check
