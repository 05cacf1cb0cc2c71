"""Resolve indeterminate writes from the node data: which ``info`` ops provably never committed.

An ``info`` completion (a time-out, a lost reply) says nothing: the op may have taken effect
at any time after its invocation, or never, and a history checker must allow both. That
hides a class of bugs: a read that returned a value whose write never committed (a dirty
read of a leader's uncommitted log) is explained by the ``info`` write taking effect. A
black-box tester cannot do better; we own the database. This module finds the ``info``
mutating ops (writes, cas, deletes, transactions with writes, appends) whose command no
node ever held or applied, so the history checkers can judge a view of the history where
each of them is a ``fail`` (:meth:`Resolution.view`; the history file is left as it is).

Why it is sound (for a correct build; a buggy one is what the checkers are there to find).
A client can see an op's effect only once its entry is committed. A committed entry is in
the WAL of a majority (each fsyncs before it acknowledges), and it leaves a WAL only by
compaction, which follows applying it, and every node logs what it applies
(``event=applied``: index, term and CRC-32 of the command bytes); by a loss the node reports
when it replays (a CorruptionPolicy cut or skip, a hole); or by the wipe of a removed member,
which joint consensus allows only once the new configuration's majority holds the log. So an
op that took effect left its command in some WAL or its CRC in some applied line at the end.
(An entry committed but applied nowhere during the run was seen by no one: judging it
``fail`` is the same as letting it take effect after every other op.)

An op is resolved only if, over every node's node log and data directory (all processes
and incarnations, dead and removed nodes included):

- its command's signature (``signatures.py``) is in no node's WAL, at any index, committed
  or not, nor in an entry kept after a hole; and its command's CRC is in no WAL entry and
  in no applied line;
- no other client op of the history makes the same signature (values are unique per run in
  the shipped workloads: register and kv write a counter, list-append and rw-register
  too; a repeated value, ``register`` with ``values=N``, or two deletes of one key are not
  resolved: which op's entry a log holds is then a guess);

and the run as a whole passes every check below, else nothing is resolved and
``refused`` says why:

- every node that was ever a member or named for the run has a node log and a readable data
  directory (a node whose files were not fetched could hold anything);
- no process of any node reported a lossy replay: a CorruptionPolicy cut or skip, a log hole,
  a recovering start, a refused start, or a start right after the disk nemesis damaged its
  WAL; and no node ran with fsync off (data that vanished could have held the entry);
- every index from 1 up to the highest one any node committed, applied, installed from a
  snapshot or compacted is identified: some node logged applying it, or holds it in its WAL
  at or below its commit index (an index compacted away with no applied line, e.g. nodes
  logging above ``info``, could hold any command);
- every decodable entry of the workload's keys rebuilds to its own CRC from its signature
  (the checker's idea of the command bytes is the node's), and every acknowledged mutating
  op is found in some WAL or applied line (else the data is incomplete, or the matching is
  wrong: durability says more).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .nodedata import NodeData, read_cluster
from .signatures import KEY_PREFIX, Signature, entry_signature, op_signature, show_signature, signature_crc

#: workloads whose history checkers judge a resolved view (linearizability for register and
#: kv, Elle for list-append and rw-register). Fencing is left out: an acquire's command
#: carries the leader's clock, so its CRC cannot be rebuilt, and the fencing checker's token
#: rules were not reviewed for a view where an info fenced-put failed.
RESOLVABLE = ("register", "kv", "list-append", "rw-register")
MUTATING = frozenset({"write", "put", "cas", "delete", "txn"})
#: the workload checkers that judge the client history itself, and so get the resolved view
#: (real runs: harness/analysis.py; the simulator: harness/sim/runner.py)
JUDGE_RESOLVED_VIEW = ("linearizable", "elle")
#: the ``extra`` field a resolved completion carries in the view (the reason, in words)
RESOLVED_FIELD = "resolved"
SHOWN = 20  # resolved ops listed in results.json


@dataclass(frozen=True)
class ResolvedOp:
    """One ``info`` op judged never committed."""

    invoke: int  # history index of the invocation
    complete: int  # history index of the info completion (a fail in the view)
    process: Any
    f: str
    key: Any
    value: Any
    signature: Signature

    def describe(self) -> str:
        return (f"{self.f} op index {self.invoke} (process {self.process}, {show_signature(self.signature)}): "
                "no node's log holds it and no node applied it")

    def written(self) -> list[tuple[Any, Any]]:
        """(history key, value) pairs this op would have written: what a read of it returns."""
        if self.f in ("write", "put"):
            return [(self.key, self.value)]
        if self.f == "cas" and isinstance(self.value, (list, tuple)) and len(self.value) == 2:
            return [(self.key, self.value[1])]
        if self.f == "txn" and isinstance(self.value, (list, tuple)):
            return [(m[1], m[2]) for m in self.value if isinstance(m, (list, tuple)) and len(m) == 3 and m[0] != "r"]
        return []


@dataclass
class Resolution:
    """Which info ops of one run never committed, and why the others stay indeterminate."""

    resolved: dict[int, ResolvedOp] = field(default_factory=dict)  # completion index -> op
    info_mutating: int = 0  # info completions of mutating client ops
    refused: str | None = None  # why nothing was resolved (a property of the whole run)
    kept: dict[str, int] = field(default_factory=dict)  # why an info op stayed indeterminate -> count

    def view(self, history: Sequence[Any]) -> list[Any]:
        """HISTORY with each resolved ``info`` completion turned into a ``fail`` (a new list;
        the ops carry ``extra["resolved"]``, so checkers can say why)."""
        if not self.resolved:
            return list(history)
        out = []
        for op in history:
            r = self.resolved.get(op.index) if op.type == "info" else None
            if r is None:
                out.append(op)
            else:
                out.append(dataclasses.replace(op, type="fail", extra={**op.extra, RESOLVED_FIELD: r.describe()}))
        return out

    def summary(self) -> dict[str, Any]:
        """What results.json records: counts, the first resolved ops, and what held the rest back."""
        out: dict[str, Any] = {"info_mutating": self.info_mutating, "resolved": len(self.resolved)}
        if self.refused:
            out["refused"] = self.refused
        if self.kept:
            out["kept"] = dict(sorted(self.kept.items()))
        if self.resolved:
            out["ops"] = [r.invoke for r in list(self.resolved.values())[:SHOWN]]
            out["explanation"] = (f"{len(self.resolved)} of {self.info_mutating} info write(s) never reached any "
                                  "node's log or state machine; the history checkers judged them as failed")
        elif self.refused:
            out["explanation"] = f"no info op resolved: {self.refused}"
        else:
            out["explanation"] = (f"none of {self.info_mutating} info write(s) could be shown never committed"
                                  if self.info_mutating else "no info writes to resolve")
        return out


# -------------------------------------------------------------------------------- the work

def _pairs(history: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(invocation, completion or None) of every client op, in invocation order."""
    pending: dict[Any, int] = {}
    out: list[list[Any]] = []
    for op in history:
        if not op.is_client:
            continue
        if op.type == "invoke":
            pending[op.process] = len(out)
            out.append([op, None])
        else:
            slot = pending.pop(op.process, None)
            if slot is not None:
                out[slot][1] = op
    return [(a, b) for a, b in out]


def _config_members(cluster: Mapping[str, NodeData]) -> set[str]:
    """Every node any configuration named: config entries, snapshots, membership-changed lines."""
    names: set[str] = set()

    def add(config: Any) -> None:
        if isinstance(config, Mapping):
            for part in ("voters", "outgoing", "learners"):
                names.update(str(n) for n in config.get(part) or ())

    for node in cluster.values():
        for entry in [*node.entries.values(), *node.stray.values()]:
            if entry.command[:1] == b"\x02":
                try:
                    add(json.loads(entry.command[1:].decode()))
                except (ValueError, UnicodeDecodeError):
                    continue
        add(node.snapshot_config)
        for process in node.processes:
            for e in process.all("membership-changed"):
                for part in ("voters", "outgoing", "learners"):
                    names.update(n for n in (e.get(part) or "").split(",") if n and n != "none")
    return names


def _run_problem(cluster: Mapping[str, NodeData], expected: Iterable[str]) -> str | None:
    """Why the node data cannot show that anything never committed (None: it can)."""
    if not cluster:
        return "no node data was read"
    for name in sorted(set(expected) | _config_members(cluster)):
        node = cluster.get(name)
        if node is None or not node.processes:
            return f"node {name} has no node log in the run (its files were not fetched?): it could hold anything"
    for node in cluster.values():
        if node.problems:
            return f"{node.name}'s files could not all be read ({node.problems[0]})"
        if node.processes and not node.has_data:
            return f"{node.name} ran but no data directory of it was read"
        for process in node.processes:
            reasons = process.lossy_replay()
            if reasons:
                return (f"{node.name} (pid {process.pid}) may have lost log entries ({reasons[0]}): an entry "
                        "it alone held could be gone")
            if process.first("unsafe-fsync-off") is not None:
                return f"{node.name} ran with fsync off: entries it held may be gone"
    return None


def _unidentified(cluster: Mapping[str, NodeData], applied: Mapping[int, Any]) -> tuple[int, list[int]]:
    """(highest index any node committed/applied/compacted, the indexes up to it that no
    applied line and no committed WAL entry identifies)."""
    top = 0
    known = set(applied)
    for node in cluster.values():
        top = max(top, node.snapshot_index, node.hard_commit or 0, node.commit_end)
        for process in node.processes:
            top = max(top, process.max_applied())
            for e in process.all("snapshot-created"):
                try:
                    top = max(top, int(e.get("index", 0)))
                except ValueError:
                    pass
        end = node.commit_end
        known.update(i for i in node.entries if i <= end)
    return top, [i for i in range(1, top + 1) if i not in known]


def resolve_info(cluster: Mapping[str, NodeData], history: Sequence[Any], workload: str,
                 expected_nodes: Iterable[str] = ()) -> Resolution:
    """Which ``info`` mutating ops of HISTORY provably never committed (module docstring).

    CLUSTER: every node's data as :func:`checkers.whitebox.read_cluster` reads it (the disk
    nemesis's damaged restarts are marked here from the history). EXPECTED_NODES: the nodes
    the run named, each of which must have files.
    """
    history = list(history)
    pairs = _pairs(history)
    candidates = [(inv, done) for inv, done in pairs
                  if done is not None and done.type == "info" and inv.f in MUTATING]
    out = Resolution()
    prefix = KEY_PREFIX.get(workload)
    if workload not in RESOLVABLE or prefix is None:
        out.refused = f"workload {workload!r}: only {', '.join(RESOLVABLE)} histories are resolved"
        return out
    sigs = {id(inv): op_signature(inv, prefix) for inv, _ in pairs if inv.f in MUTATING}
    candidates = [(inv, done) for inv, done in candidates if sigs.get(id(inv)) is not None]
    out.info_mutating = len(candidates)
    if not candidates:
        return out
    from . import damaged_restarts  # the package imports this module's siblings, not this one
    from .nodedata import mark_damaged

    mark_damaged(cluster, damaged_restarts(history))
    out.refused = _run_problem(cluster, expected_nodes)
    if out.refused:
        return out

    # Everything the nodes held or applied: signatures and CRCs of every WAL entry (usable log
    # and entries kept after a hole, committed or not), CRCs of every applied line.
    in_wal: dict[Signature, tuple[str, int]] = {}
    crcs: dict[int, str] = {}
    for node in cluster.values():
        for entry in [*node.entries.values(), *node.stray.values()]:
            crcs.setdefault(entry.crc, f"{node.name}'s WAL at index {entry.index}")
            sig = entry_signature(entry)
            if sig is None:
                continue
            in_wal.setdefault(sig, (node.name, entry.index))
            # The checker's idea of the command bytes must be the node's: rebuild the CRC.
            key = sig[1] if sig[0] != "txn" else (sig[1][0][1] if sig[1] else "")
            if isinstance(key, str) and key.startswith(prefix) and signature_crc(sig) != entry.crc:
                out.refused = (f"{node.name}'s entry at index {entry.index} ({show_signature(sig)}) does not "
                               "rebuild to its own CRC: the command encoding is not what this checker assumes")
                return out
    applied: dict[int, set[int]] = {}
    for node in cluster.values():
        for a in node.applied():
            applied.setdefault(a.index, set()).add(a.crc)
            crcs.setdefault(a.crc, f"applied by {node.name} at index {a.index}")
    top, missing = _unidentified(cluster, applied)
    if missing:
        out.refused = (f"index {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                       + f" (of 1..{top}) could hold any command: no node logged applying it and no node "
                       "holds it committed")
        return out

    # Calibration: every acknowledged write must be found the same way an info one would be.
    for inv, done in pairs:
        sig = sigs.get(id(inv))
        if done is None or done.type != "ok" or sig is None:
            continue
        if sig not in in_wal and signature_crc(sig) not in crcs:
            out.refused = (f"acknowledged {show_signature(sig)} (history index {done.index}) is in no node's "
                           "log and no node applied it: the node data is incomplete (see durability)")
            return out

    seen: dict[Signature, int] = {}
    for inv, _ in pairs:
        sig = sigs.get(id(inv))
        if sig is not None:
            seen[sig] = seen.get(sig, 0) + 1

    def keep(why: str) -> None:
        out.kept[why] = out.kept.get(why, 0) + 1

    for inv, done in candidates:
        sig = sigs[id(inv)]
        crc = signature_crc(sig)
        if seen[sig] > 1:
            keep("another op writes the same (repeated value)")
        elif sig in in_wal:
            keep("in some node's log")
        elif crc is None:
            keep("command cannot be rebuilt")
        elif crc in crcs:
            keep("applied by some node")
        else:
            out.resolved[done.index] = ResolvedOp(inv.index, done.index, inv.process, inv.f, inv.key, inv.value, sig)
    return out


# ------------------------------------------------------------------ telling checkers' readers

def note_result(result: dict[str, Any], resolution: Resolution, recheck: Any,
                history: Sequence[Any] = ()) -> dict[str, Any]:
    """Record in a history checker's RESULT (judged on the resolved view) that it was, and
    whether its verdict depends on it: when it is invalid, RECHECK() judges the recorded
    history itself; if that is valid, the explanation starts by saying so. Failing keys of
    a linearizability result name the resolved ops on them whose value some read saw."""
    n = len(resolution.resolved)
    result["resolved_info_ops"] = n
    if not n or result.get("valid") is not False:
        return result
    try:
        raw = recheck()
    except Exception as err:  # noqa: BLE001 - the verdict stands; only the note is lost
        raw = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
    result["valid_without_resolution"] = raw.get("valid", "unknown")
    notes = _linearizability_notes(result, resolution, history)
    if raw.get("valid") is True:
        lead = (f"only with the {n} info write(s) that no node's log or state machine ever held judged as failed "
                "(resolved from the node files; left indeterminate, the history is valid)")
        shown = (":\n" + "\n".join(notes)) if notes else ""
        result["explanation"] = f"{lead}{shown}\n{result.get('explanation', '')}"
    elif notes:
        result["explanation"] = str(result.get("explanation", "")) + "\n" + "\n".join(notes)
    return result


def _linearizability_notes(result: dict[str, Any], resolution: Resolution, history: Sequence[Any]) -> list[str]:
    """For each failing key: the resolved writes of it and which reads saw their value."""
    failures = result.get("failures")
    if not isinstance(failures, list):
        return []
    reads: dict[tuple[str, str], list[int]] = {}  # (key, value) -> ok reads that returned it
    for op in history:
        if op.type == "ok" and op.f in ("read", "get") and op.is_client:
            reads.setdefault((json.dumps(_plain(op.key)), json.dumps(_plain(op.value))), []).append(op.index)
    by_key: dict[str, list[ResolvedOp]] = {}
    for r in resolution.resolved.values():
        for key, _value in r.written():
            by_key.setdefault(json.dumps(_plain(key)), []).append(r)
    notes = []
    for failure in failures:
        ops = by_key.get(json.dumps(_plain(failure.get("key"))), [])
        if not ops:
            continue
        texts = []
        for r in ops[:5]:
            seen_by = [i for key, value in r.written()
                       for i in reads.get((json.dumps(_plain(key)), json.dumps(_plain(value))), [])]
            texts.append(f"op index {r.invoke} ({r.f} {_plain(r.value)}, info"
                         + (f"; read by op index {', '.join(map(str, seen_by[:3]))}" if seen_by else "") + ")")
        more = f" and {len(ops) - 5} more" if len(ops) > 5 else ""
        note = (f"key {failure.get('key')!r}: {', '.join(texts)}{more} never reached any node's log or state "
                "machine (resolved from the node logs): judged as failed")
        failure["resolved_ops"] = [r.invoke for r in ops]
        notes.append(note)
    return notes


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def resolve_from_files(nodes_dir: str | Path, names: Iterable[str], history: Sequence[Any], workload: str,
                       expected_nodes: Iterable[str] = ()) -> Resolution:
    """:func:`resolve_info` over the node files under NODES_DIR (a run's ``nodes/``); files that
    cannot be read resolve nothing (``refused`` says why), never a crash."""
    try:
        return resolve_info(read_cluster(nodes_dir, list(names)), history, workload, expected_nodes)
    except Exception as err:  # noqa: BLE001 - no resolution is the safe answer
        return Resolution(refused=f"the node files could not be read ({type(err).__name__}: {err})")


def judge_resolved(check: Callable[[Sequence[Any], Any], dict[str, Any]], history: Sequence[Any],
                   view: Sequence[Any], resolution: Resolution, options: Any,
                   raw_options: Any = None) -> dict[str, Any]:
    """A history checker's verdict on the resolved VIEW, noted with what the resolution did
    (:func:`note_result`); the recorded HISTORY is judged again (with RAW_OPTIONS, default
    OPTIONS) only when the view is invalid, to say whether the verdict depends on it."""
    recheck_options = options if raw_options is None else raw_options
    return note_result(check(view, options), resolution, lambda: check(history, recheck_options), history)
