"""State machine safety (Raft §5.4.3) and "nothing applied is forgotten across restarts".

Inputs: the ``event=applied`` lines every node writes as it applies entries (index, term
and CRC-32 of the WAL command bytes; ``ukehi/node.py`` ``_apply``), the WALs at the end,
and each process's ``replay-done`` line.

- No two applications of one index differ: not between nodes, not between two processes
  of one node (a restarted node re-applies its log from the snapshot).
- Every committed entry in a WAL at the end is what was applied at its index.
- Across a restart, a node holds (in its WAL and snapshot) every index it had applied
  before, and starts from a commit index no lower than the one it started from last time
  (after a lossy start: the one it could hold, within its cut log), unless that restart's
  replay reports a CorruptionPolicy cut or skip, a log hole, or a recovering state
  (a policy's documented loss is not a violation here; whether the cluster lost
  acknowledged data then is the log-matching and durability checkers' call).
  A ``commit-clamped`` warning without such a report is the same loss seen by the node.
"""

from __future__ import annotations

from typing import Any, Mapping

from .common import nothing_to_judge, result
from .nodedata import Applied, NodeData, describe_command


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_state_machine_safety(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    if not any(n.processes for n in cluster.values()):
        return nothing_to_judge("no node logs to read")
    violations: list[dict[str, Any]] = []
    by_index: dict[int, dict[tuple[int, int], list[Applied]]] = {}
    count = 0
    for node in cluster.values():
        for a in node.applied():
            by_index.setdefault(a.index, {}).setdefault((a.term, a.crc), []).append(a)
            count += 1
    runs: list[tuple[list[int], Any]] = []  # consecutive indexes applied two ways by the same nodes
    for index in sorted(by_index):
        variants = by_index[index]
        if len(variants) < 2:
            continue
        split = tuple(sorted(tuple(sorted({a.node for a in apps})) for apps in variants.values()))
        if runs and runs[-1][1][0] == split and runs[-1][0][-1] == index - 1:
            runs[-1][0].append(index)
        else:
            runs.append(([index], (split, variants)))
    for indexes, (split, variants) in runs:
        first, last = indexes[0], indexes[-1]
        parts = []
        for (term, crc), apps in sorted(variants.items()):
            who = sorted({f"{a.node} (pid {a.pid})" for a in apps})
            parts.append(f"term {term} crc {crc:08x} by {', '.join(who)}")
        where = f"index {first} was" if first == last else f"indexes {first}..{last} were"
        violations.append({"index": first, "last_index": last,
                           "nodes": sorted({a.node for v in variants.values() for a in v}),
                           "what": f"{where} applied differently" + (f" (at {first}: " if first != last else ": ")
                                   + " vs ".join(parts) + (")" if first != last else "")})
    for node in cluster.values():
        end = node.commit_end
        for index, entry in node.entries.items():
            variants = by_index.get(index)
            if index > end or not variants or len(variants) > 1:
                continue
            (term, crc), apps = next(iter(variants.items()))
            if (entry.term, entry.crc) != (term, crc):
                violations.append({"index": index, "nodes": [node.name] + sorted({a.node for a in apps}),
                                   "what": f"{node.name}'s WAL holds committed index {index} as term {entry.term} "
                                           f"{describe_command(entry.command)} (crc {entry.crc:08x}), but "
                                           f"{', '.join(sorted({a.node for a in apps}))} applied term {term} "
                                           f"crc {crc:08x} there"})
    violations.extend(_restart_problems(cluster))
    if count:
        ok_text = (f"{count} applications of {len(by_index)} indexes agree; no node forgot what it had "
                   "applied across a restart")
    else:
        ok_text = ("no event=applied lines to compare (nodes older than this check, or a log level above "
                   "info): only restarts against saved commit indexes were checked")
    return result(violations, ok_text, applied_indexes=len(by_index))


def _restart_problems(cluster: Mapping[str, NodeData]) -> list[dict[str, Any]]:
    out = []
    for node in cluster.values():
        applied_before = 0  # highest index applied by earlier processes of this incarnation
        applied_pid = None
        commit_before = 0
        incarnation = None
        for process in node.processes:
            if process.incarnation != incarnation:
                incarnation, applied_before, applied_pid, commit_before = process.incarnation, 0, None, 0
            replay = process.replay
            excuses = process.lossy_replay()
            if replay is not None and not excuses:
                last = _int(replay.get("last_index"))
                commit = _int(replay.get("commit"))
                if last is not None and last < applied_before:
                    out.append({"node": node.name, "pid": process.pid, "index": applied_before, "what":
                                f"{node.name} had applied up to index {applied_before} (pid {applied_pid}) but "
                                f"restarted (pid {process.pid}, {process.started_at}) with its log ending at "
                                f"{last}, and no CorruptionPolicy report explains the loss"})
                if commit is not None and commit < commit_before:
                    out.append({"node": node.name, "pid": process.pid, "what":
                                f"{node.name}'s commit index went back from {commit_before} to {commit} at its "
                                f"restart (pid {process.pid}, {process.started_at})"})
                for clamp in process.all("commit-clamped"):
                    out.append({"node": node.name, "pid": process.pid, "what":
                                f"{node.name} restarted (pid {process.pid}) with saved commit index "
                                f"{clamp.get('saved_commit')} but a log ending at {clamp.get('last_index')}: "
                                "committed entries it had persisted are gone, and no CorruptionPolicy report "
                                "explains it"})
            if replay is not None:
                held = _int(replay.get("commit")) or 0
                last = _int(replay.get("last_index"))
                if excuses and last is not None:
                    # After a lossy replay the saved commit may lie past the cut log; the core
                    # then starts from the log's end (ukehi/raft/core.py clamps it while
                    # recovering) and saves the commit it re-learns, which may be lower than
                    # the one it loaded: that is the commit this process held, not the saved
                    # one (sim seed 1037: loaded 51 over a log cut at 45, saved 47).
                    held = min(held, last)
                commit_before = max(commit_before if not excuses else 0, held)
            top = process.max_applied()
            if excuses:
                applied_before, applied_pid = top, process.pid
            elif top > applied_before:
                applied_before, applied_pid = top, process.pid
    return out
