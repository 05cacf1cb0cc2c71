"""Durability: every write acknowledged to a client is in the committed log of a majority.

Ukehi's KV commands carry no request id (``ukehi/kv.py``: ``{"op", "key", "value", ...}``;
adding one would change the wire schema, the node and every client), so an acknowledged
op is matched to log entries by what it wrote:

- ``write``/``put`` -> ``put`` of the key and value; ``cas`` -> ``cas`` with expected and
  new; ``delete`` -> ``delete`` of the key; ``fenced-put [value token]`` -> ``fenced_put``
  of the key, value and token; ``acquire`` -> the ``acquire`` entry whose fencing token is
  the token the client got back (tokens are unique, so this one is exact); ``txn``
  (list-append, rw-register) -> the ``txn`` entry with the same micro-ops as sent (a
  read's value None); read-only transactions write nothing and are not counted.
- The history's key ``k`` is the node key ``<workload>/<k>`` (``register/``, ``kv/``,
  ``fenced/``), as the shipped workloads name them.

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

import json
from typing import Any, Iterable, Mapping

from .common import nothing_to_judge, result
from .nodedata import LogEntry, NodeData, voters_at_end

KEY_PREFIX = {"register": "register/", "kv": "kv/", "fencing": "fenced/", "list-append": "la/",
              "rw-register": "rw/"}
Signature = tuple[Any, ...]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def op_signature(op: Any, prefix: str) -> Signature | None:
    """The signature of the log entry an acknowledged client op must have made; None for reads."""
    key = f"{prefix}{op.key}"
    f, value = op.f, op.value
    if f in ("write", "put"):
        return ("put", key, _canon(value))
    if f == "cas" and isinstance(value, (list, tuple)) and len(value) == 2:
        return ("cas", key, _canon(value[0]), _canon(value[1]))
    if f == "delete":
        return ("delete", key)
    if f == "fenced-put" and isinstance(value, (list, tuple)) and len(value) == 2:
        return ("fenced_put", key, _canon(value[0]), int(value[1]))
    if f == "acquire" and isinstance(value, int):
        return ("acquire", value)
    if f == "txn" and isinstance(value, (list, tuple)):
        # list-append / rw-register: the micro-ops as sent (a read's value is None in the
        # command; the history holds what it saw), keys under the workload's prefix.
        mops = [m for m in value if isinstance(m, (list, tuple)) and len(m) == 3]
        if len(mops) != len(value) or all(m[0] == "r" for m in mops):
            return None  # malformed, or read-only: nothing written
        return ("txn", tuple((m[0], f"{prefix}{m[1]}", None if m[0] == "r" else _canon(m[2])) for m in mops))
    return None


def entry_signature(entry: LogEntry) -> Signature | None:
    if entry.command[:1] != b"\x00" or len(entry.command) < 2:
        return None
    from ukehi.kv import CommandError, decode_command

    try:
        cmd = decode_command(entry.command[1:])
    except CommandError:
        return None
    op = cmd.get("op")
    if op == "put":
        return ("put", cmd["key"], _canon(cmd["value"]))
    if op == "cas":
        return ("cas", cmd["key"], _canon(cmd["expected"]), _canon(cmd["new"]))
    if op == "delete":
        return ("delete", cmd["key"])
    if op == "fenced_put":
        return ("fenced_put", cmd["key"], _canon(cmd["value"]), int(cmd["token"]))
    if op == "acquire":
        return ("acquire", entry.token)
    if op == "txn":
        return ("txn", tuple((m[0], m[1], None if m[0] == "r" else _canon(m[2])) for m in cmd["ops"]))
    return None


def signature_crc(sig: Signature) -> int | None:
    """CRC-32 of the WAL command bytes the node writes for SIG (``event=applied`` carries it).

    The node builds ``{"op", **request fields}`` in the order the client sends them and
    encodes it with msgpack (``ukehi/kv.py``); acquire carries the leader's clock and
    cannot be rebuilt (None).
    """
    import zlib

    import msgpack

    op = sig[0]
    if op == "put":
        cmd = {"op": "put", "key": sig[1], "value": json.loads(sig[2])}
    elif op == "cas":
        cmd = {"op": "cas", "key": sig[1], "expected": json.loads(sig[2]), "new": json.loads(sig[3])}
    elif op == "delete":
        cmd = {"op": "delete", "key": sig[1]}
    elif op == "fenced_put":
        cmd = {"op": "fenced_put", "key": sig[1], "value": json.loads(sig[2]), "token": sig[3]}
    elif op == "txn":
        cmd = {"op": "txn", "ops": [[f, k, None if v is None else json.loads(v)] for f, k, v in sig[1]]}
    else:
        return None
    return zlib.crc32(b"\x00" + msgpack.packb(cmd, use_bin_type=True))


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
            "what": f"{missing} of {len(ops)} acknowledged {first.f} op(s) {_show(sig)} (e.g. history index "
                    f"{first.index}, process {first.process}) are not in the committed log of a majority of "
                    f"{','.join(sorted(voters))} at the end"
                    + (f"; committed on fewer nodes at index(es) {where[:10]}" if where else
                       "; no node holds such an entry committed")})
    total = sum(len(v) for v in acked.values())
    return result(violations, f"all {total - unverifiable} checkable acknowledged writes are committed on a "
                              f"majority of {','.join(sorted(voters))} ({source})",
                  acknowledged=total, unverifiable=unverifiable, voters=sorted(voters),
                  excused=sorted(excused))


def _show(sig: Signature) -> str:
    if sig[0] == "acquire":
        return f"acquire with token {sig[1]:#x}"
    if sig[0] == "txn":
        return "txn " + " ".join(f"[{f} {k}{'' if v is None else ' ' + v}]" for f, k, v in sig[1])
    return f"{sig[0]} {sig[1]} " + " ".join(str(s) for s in sig[2:])
