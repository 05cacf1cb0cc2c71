"""Durability: every write acknowledged to a client is in the committed log of a majority.

An acknowledged op is matched to log entries by what it wrote (``signatures.py``: a
write to the ``put`` of its key and value, a transaction to the ``txn`` entry with the
same micro-ops, an acquire to the entry with the token it got; read-only transactions
write nothing and are not counted).

Values repeat (the register workload draws from a handful), so the check counts: for
every signature, the acknowledged ops with it must not outnumber the distinct indexes
that hold a matching entry on a majority. Each acknowledgement comes from applying its
own entry, so this is necessary; it can miss a lost write that a duplicate (an
unacknowledged write of the same value) covers.

"On a majority" counts, for each committed entry (one that a node holds at or below its
commit index), the final voters whose log holds that very entry (a follower that has not
yet heard the new commit index still holds it durably), or whose snapshot covers the
index. A voter whose current incarnation reported a CorruptionPolicy cut or skip (the disk
nemesis destroyed its copy on purpose) is excused, as long as one voter still holds the
entry. An index compacted into snapshots everywhere has no command left to read; it is identified by what the nodes applied there
(``event=applied`` carries the CRC-32 of the command bytes, which an acknowledged op's
fields rebuild exactly), and counts for the voters whose snapshot covers it. Ops whose
entry could be such an index but cannot be identified (no applied line, or an acquire,
whose command carries the leader's clock) are reported as ``unverifiable``, never as lost.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .common import nothing_to_judge, result
from .nodedata import LogEntry, NodeData, voters_at_end
# The op <-> entry matching is shared with resolve.py; op_signature and signature_crc stay
# importable from here.
from .signatures import KEY_PREFIX, Signature, entry_signature, op_signature, show_signature, signature_crc

__all__ = ["check_durability", "op_signature", "entry_signature", "signature_crc", "KEY_PREFIX", "Signature"]


def check_durability(cluster: Mapping[str, NodeData], history: Iterable[Any], workload: str) -> dict[str, Any]:
    prefix = KEY_PREFIX.get(workload)
    if prefix is None:
        return nothing_to_judge(f"workload {workload!r}: no mapping from its ops to log entries")
    nodes = {name: n for name, n in cluster.items() if n.has_data}
    if not nodes:
        return nothing_to_judge("no node data directory to read")
    voters, outgoing, source = voters_at_end(cluster)
    acked: dict[Signature, list[Any]] = {}
    for op in history:
        if op.type == "ok" and op.is_client:
            sig = op_signature(op, prefix)
            if sig is not None:
                acked.setdefault(sig, []).append(op)
    # index -> the committed entries there (held by a node whose commit index reaches it) ->
    # every node that holds that very entry, whether or not it has learnt that it is committed
    holders: dict[int, dict[LogEntry, set[str]]] = {}
    for node in nodes.values():
        end = node.commit_end
        for index, entry in node.entries.items():
            if index <= end:
                holders.setdefault(index, {}).setdefault(entry, set())
    for node in nodes.values():
        for index, entry in node.entries.items():
            if entry in holders.get(index, ()):
                holders[index][entry].add(node.name)
    excused = {n.name for n in nodes.values() if n.corruption_reported()}

    def on_majority(index: int, entry: LogEntry | None) -> bool:
        have = set(holders[index][entry]) if entry is not None else set()
        have |= {n.name for n in nodes.values() if n.covered_by_snapshot(index)}
        for group in (voters, outgoing):
            if not group:
                continue
            present = len(have & group)
            if present == 0 and group is voters:
                return False
            if present + len((excused - have) & group) < len(group) // 2 + 1:
                return False
        return True

    durable: dict[Signature, set[int]] = {}
    anywhere: dict[Signature, set[int]] = {}
    for index, entries in holders.items():
        for entry in entries:
            sig = entry_signature(entry)
            if sig is None:
                continue
            anywhere.setdefault(sig, set()).add(index)
            if on_majority(index, entry):
                durable.setdefault(sig, set()).add(index)
    # Indexes whose content survives only in snapshots: identified by what was applied there
    # (the CRC of the command bytes, which an acknowledged op's fields rebuild exactly).
    compacted = max((n.snapshot_index for n in nodes.values()), default=0)
    hidden = [i for i in range(1, compacted + 1) if i not in holders]
    applied: dict[int, set[int]] = {}
    for node in cluster.values():
        for a in node.applied():
            if a.index <= compacted:
                applied.setdefault(a.index, set()).add(a.crc)
    by_crc = {crc: sig for sig in acked if (crc := signature_crc(sig)) is not None}
    unmatched = 0
    opaque = 0  # compacted entries no rebuildable op matches: each may be an acquire
    for index in hidden:
        crcs = applied.get(index, set())
        if len(crcs) != 1:
            unmatched += 1  # nobody logged applying it (or nodes disagree: state-machine-safety says so)
            continue
        sig = by_crc.get(next(iter(crcs)))
        if sig is None:
            # not an acknowledged put/cas/delete/fenced_put/txn; an acquire's command carries the
            # leader's clock, so its CRC cannot be rebuilt: it may be one of those
            opaque += on_majority(index, None)
            continue
        anywhere.setdefault(sig, set()).add(index)
        if on_majority(index, None):
            durable.setdefault(sig, set()).add(index)
    violations, unverifiable = [], 0
    for sig, ops in acked.items():
        have = len(durable.get(sig, ()))
        if have >= len(ops):
            continue
        missing = len(ops) - have
        if sig[0] == "acquire" and unmatched < missing <= unmatched + opaque:
            opaque -= missing - unmatched  # each compacted entry holds at most one acquire
            unverifiable += missing
            continue
        if missing <= unmatched:
            # the missing entries may sit in snapshots, where no command can be matched
            unverifiable += missing
            continue
        where = sorted(anywhere.get(sig, ()))
        first = ops[0]
        violations.append({
            "signature": list(sig), "acknowledged": len(ops), "on_majority": have,
            "op_indexes": [o.index for o in ops][:20],
            "what": f"{missing} of {len(ops)} acknowledged {first.f} op(s) {show_signature(sig)} (e.g. history index "
                    f"{first.index}, process {first.process}) are not in the committed log of a majority of "
                    f"{','.join(sorted(voters))} at the end"
                    + (f"; committed on fewer nodes at index(es) {where[:10]}" if where else
                       "; no node holds such an entry committed")})
    total = sum(len(v) for v in acked.values())
    return result(violations, f"all {total - unverifiable} checkable acknowledged writes are committed on a "
                              f"majority of {','.join(sorted(voters))} ({source})",
                  acknowledged=total, unverifiable=unverifiable, voters=sorted(voters),
                  excused=sorted(excused))

