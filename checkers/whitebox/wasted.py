"""Wasted work (simulator only): work an efficient node never does, that no safety or
liveness verdict sees. A node that fsyncs for nothing or re-sends what its follower already
has is correct and slower; these checkers make such "performance" bugs visible.

The simulator (``ukehi.sim``) sees every message and every file call whole, so these are
exact rules, not rates: each is something the correct build never does (measured over
hundreds of seeds of every workload and fault family, see README "Mutation score"), and a
single violation fails the seed, naming the node, the term, the index or the file.

=======================  ==========================================================
checker                  property
=======================  ==========================================================
redundant-fsync          no node fsyncs a regular file that had no write (nor truncate,
                         nor ``O_TRUNC`` open) since its previous fsync; the simulated
                         file system counts them (``ukehi.sim.fs.SimFS.clean_fsyncs``)
redundant-replication    a leader never re-sends a follower an entry (a) while it heard
                         nothing from that follower since it sent it (``unprompted``), or
                         (b) that it already sent while streaming to it, with no sign of
                         loss since (``replicating``); see ``ukehi.sim.world.WasteWatch``
append-cap               no AppendEntries carries more entries than the node's
                         ``max_entries_per_message``, nor more than one entry whose data
                         exceed ``max_bytes_per_message`` in all
=======================  ==========================================================

Scope of ``redundant-fsync``: every regular file (WAL segments, hard state, snapshots and
their temp files), directories excluded: a directory fsync makes entries durable, which no
file write marks, so "clean" cannot be told for a directory from the calls. A file is dirty
from its creation until its first fsync and again after a fault rewrote it (a crash's
revert of unsynced bytes, disk damage), so a recovering node may sync what it found. The
correct build fsyncs no clean file on any seed measured: the WAL syncs only when an append
is pending (``WAL.sync``'s ``_unsynced``), seals a segment with an fsync only when it has
unsynced bytes, and every other file is written, fsynced once and closed.

The inputs are plain data (what ``SimFS.clean_fsyncs`` and ``WasteWatch.summary`` give),
so each checker is a pure function, testable on hand-made records.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .common import result

__all__ = ["check_redundant_fsync", "check_redundant_replication", "check_append_cap", "check_wasted_work",
           "NAMES"]

NAMES = ("redundant-fsync", "redundant-replication", "append-cap")


def _node_of(path: str, prefixes: Mapping[str, str]) -> tuple[str, str]:
    """(node, path inside its directory) for a simulated path such as /sim/n2/data/..."""
    for node, prefix in prefixes.items():
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return node, path[len(prefix.rstrip("/")) + 1:]
    return "?", path


def check_redundant_fsync(clean_fsyncs: Mapping[str, Sequence[float]], prefixes: Mapping[str, str]) -> dict[str, Any]:
    """``clean_fsyncs``: {file path: [fsyncs of the file while clean, virtual time of the
    first]}; ``prefixes``: {node: its directory in the simulated file system}."""
    violations = []
    for path in sorted(clean_fsyncs, key=lambda p: (clean_fsyncs[p][1], p)):
        count, first = int(clean_fsyncs[path][0]), float(clean_fsyncs[path][1])
        node, rel = _node_of(path, prefixes)
        violations.append({
            "node": node, "file": rel, "count": count, "first_t": round(first, 6),
            "what": f"{node} fsynced {rel} {count} time{'s' if count != 1 else ''} with no write since its "
                    f"previous fsync (the first at t={first:.3f} s): an fsync of a clean file is wasted"})
    total = sum(int(v[0]) for v in clean_fsyncs.values())
    return result(violations, "no node fsynced a file it had not written since its last fsync",
                  clean_fsyncs=total)


def _replication_text(rule: str, v: Mapping[str, Any]) -> str:
    where = (f"{v['leader']} (leader, term {v['term']}) re-sent entry {v['index']} to {v['follower']} "
             f"at t={float(v['t']):.3f} s (append of entries {v['first']}-{v['last']})")
    if rule == "unprompted":
        return (f"{where}: it had sent that entry at t={float(v['earlier_t']):.3f} s and nothing from "
                f"{v['follower']} reached it since (no answer, heartbeat answer or rejection)")
    return (f"{where}: it had sent it already at t={float(v['earlier_t']):.3f} s while streaming to "
            f"{v['follower']} ({v['follower']} acknowledged up to {v['acked']} at t={float(v['acked_t']):.3f} s, "
            f"newer than before), and since then {v['follower']} neither restarted, installed a snapshot "
            f"nor rejected an append, and no message between them was lost")


def check_redundant_replication(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``summary``: ``WasteWatch.summary()`` (rules ``unprompted`` and ``replicating``)."""
    counts = summary.get("counts", {})
    records = summary.get("violations", {})
    violations = []
    for rule in ("unprompted", "replicating"):
        for v in records.get(rule, []):
            violations.append({"rule": rule, **{k: v[k] for k in ("leader", "follower", "term", "index", "t")},
                               "what": _replication_text(rule, v)})
    violations.sort(key=lambda v: v["t"])
    out = result(violations, f"no leader re-sent an entry without a reason it could know of "
                             f"({summary.get('appends', 0)} appends, {summary.get('entries_sent', 0)} entries sent)",
                 resends={r: int(counts.get(r, 0)) for r in ("unprompted", "replicating")},
                 appends=summary.get("appends", 0), entries_sent=summary.get("entries_sent", 0))
    if violations:
        out["violation_count"] = sum(int(counts.get(r, 0)) for r in ("unprompted", "replicating"))
    return out


def check_append_cap(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``summary``: ``WasteWatch.summary()`` (rule ``oversized``)."""
    violations = []
    for v in summary.get("violations", {}).get("oversized", []):
        over = (f"{v['entries']} entries, over max_entries_per_message={v['max_entries']}"
                if v["entries"] > v["max_entries"] else
                f"{v['entries']} entries of {v['bytes']} data bytes, over max_bytes_per_message={v['max_bytes']}")
        violations.append({"leader": v["leader"], "follower": v["follower"], "term": v["term"],
                           "index": v["first"], "t": v["t"],
                           "what": f"{v['leader']} (leader, term {v['term']}) sent {v['follower']} an append of "
                                   f"entries {v['first']}-{v['last']} at t={float(v['t']):.3f} s: {over}"})
    out = result(violations, f"every append within max_entries_per_message={summary.get('max_entries')} and "
                             f"max_bytes_per_message={summary.get('max_bytes')}")
    if violations:
        out["violation_count"] = int(summary.get("counts", {}).get("oversized", len(violations)))
    return out


def check_wasted_work(clean_fsyncs: Mapping[str, Sequence[float]], prefixes: Mapping[str, str],
                      summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every wasted-work checker: {checker name: result}."""
    return {"redundant-fsync": check_redundant_fsync(clean_fsyncs, prefixes),
            "redundant-replication": check_redundant_replication(summary),
            "append-cap": check_append_cap(summary)}
