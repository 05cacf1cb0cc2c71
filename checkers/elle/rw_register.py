"""Read-write registers: version orders from what the history proves, then dependencies.

Writes are of unique values, so a read names its writer. A read does not say which
versions came before it, so the version order of a key is a graph, built from:

- the initial state: ``nil`` comes before every written value;
- writes follow reads: a transaction that read ``v1`` and then wrote ``v2`` to a key puts
  ``v1`` before ``v2``;
- the Raft log: when completions carry ``raft_index``, the key's writes in index order
  (the explicit version order a replicated log gives, jepsen-io/elle #30);
- with ``sequential_keys``, each process's writes to a key in its order, and with
  ``linearizable_keys``, writes that completed before another began (these two assume the
  database is that strong per key; off unless asked for).

Only a transaction's last write to a key is a version others can see (an earlier one is
intermediate); only its first access to a key, when it is a read, is an external read.
Dependencies follow from each version edge ``v1 < v2``: ww from ``v1``'s writer to
``v2``'s, rw from each reader of ``v1`` to ``v2``'s writer, and wr from a writer to each
reader of its value. A cycle in a key's version graph is *cyclic-versions*.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from checkers.elle.graph import RW, WR, WW, Graph, strongly_connected
from checkers.elle.txn import APPEND, READ, WRITE, Txn, TxnError, _show, why_failed

INITIAL = "initial state"
WFR = "writes follow reads"
RAFT = "raft log"
PROCESS_ORDER = "process order"
REAL_TIME = "real time"


class RwRegister:
    name = "rw-register"

    def __init__(self, txns: list[Txn], failed: list[Txn], *, sequential_keys: bool = False,
                 linearizable_keys: bool = False) -> None:
        self.txns = txns
        self.anomalies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.writer: dict[tuple, int] = {}
        self.raft_of: dict[tuple, int] = {}
        self.versions: dict[Any, dict[tuple, str]] = defaultdict(dict)
        self._intermediate: dict[tuple, int] = {}
        self._failed = {(k, v): t for t in failed for f, k, v in t.mops if f == WRITE}
        self._reads: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
        self._cyclic: set = set()
        self._scan()
        if sequential_keys:
            self._process_order()
        if linearizable_keys:
            self._real_time()
        self._raft_order()

    def _scan(self) -> None:
        rmw: dict[tuple, list[int]] = defaultdict(list)
        for t in self.txns:
            ok = t.type == "ok"
            tid = t.id
            first: dict[Any, tuple] = {}
            final: dict[Any, tuple[Any, int]] = {}
            known: dict[Any, Any] = {}
            for i, (f, k, v) in enumerate(t.mops):
                if f == WRITE:
                    if k in final:
                        self._intermediate[(k, final[k][0])] = tid
                    final[k] = (v, i)
                    first.setdefault(k, (WRITE,))
                    known[k] = v
                elif f == READ:
                    if not ok:
                        continue
                    if k not in first:
                        first[k] = (READ, v)
                        self._reads[k].append((tid, v))
                    elif k in known and known[k] != v:
                        self.anomalies["internal"].append({
                            "txn": t.name, "key": k, "read": v,
                            "explanation": f"{t.name} read key {k} as {_show(v)}, but its own earlier "
                                           f"read or write says it must be {_show(known[k])}"})
                    known[k] = v
                elif f == APPEND:
                    raise TxnError(f"op index {t.invoke}: append micro-ops belong to list-append "
                                   f"histories; check with --model list-append")
            for k, (v, i) in final.items():
                self.writer[(k, v)] = tid
                if ok:
                    ri = t.raft_index_of(i)
                    if ri is not None:
                        self.raft_of[(k, v)] = ri
                fv = first[k]
                if fv[0] == READ and ok:
                    if fv[1] != v:
                        self.versions[k].setdefault((fv[1], v), WFR)
                    rmw[(k, fv[1])].append(tid)
        for (k, v), tids in rmw.items():
            if len(tids) > 1:
                names = [self.txns[i].name for i in tids]
                self.anomalies["lost-update"].append({
                    "key": k, "read": v, "txns": names,
                    "explanation": f"{', '.join(names)} all read key {k} as {_show(v)} and then wrote "
                                   f"it: each one's write is lost to the others"})

    def _raft_order(self) -> None:
        by_key: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
        for (k, v), ri in self.raft_of.items():
            by_key[k].append((ri, v))
        for k, pairs in by_key.items():
            pairs.sort(key=lambda p: p[0])
            edges = self.versions[k]
            for (i1, v1), (i2, v2) in zip(pairs, pairs[1:]):
                edges.setdefault((v1, v2), f"{RAFT}: index {i1} < {i2}")

    def _process_order(self) -> None:
        last: dict[tuple, Any] = {}
        for t in self.txns:  # invocation order; a process runs one transaction at a time
            if t.type != "ok":
                continue
            for k, v in self._final_writes(t):
                prev = last.get((t.process, k))
                if prev is not None and prev != v:
                    self.versions[k].setdefault((prev, v), PROCESS_ORDER)
                last[(t.process, k)] = v

    def _real_time(self) -> None:
        events: dict[Any, list[tuple[int, int, Any]]] = defaultdict(list)
        for t in self.txns:
            if t.type != "ok":
                continue
            for k, v in self._final_writes(t):
                events[k].append((t.invoke, 1, v))
                events[k].append((t.complete, 0, v))  # type: ignore[arg-type]
        for k, evs in events.items():
            evs.sort(key=lambda e: (e[0], e[1]))
            frontier: set = set()
            preds: dict[Any, set] = {}
            for _, kind, v in evs:
                if kind == 1:
                    preds[v] = set(frontier)
                else:
                    frontier -= preds[v]
                    frontier.add(v)
            for v, ps in preds.items():
                for p in ps:
                    self.versions[k].setdefault((p, v), REAL_TIME)

    @staticmethod
    def _final_writes(t: Txn) -> list[tuple[Any, Any]]:
        final: dict[Any, Any] = {}
        for f, k, v in t.mops:
            if f == WRITE:
                final[k] = v
        return list(final.items())

    def add_edges(self, graph: Graph) -> None:
        writer = self.writer
        readers: dict[tuple, list[int]] = defaultdict(list)
        wr_s: list[int] = []
        wr_d: list[int] = []
        for k, rs in self._reads.items():
            for tid, v in rs:
                if v is None:
                    readers[(k, None)].append(tid)
                    continue
                w = writer.get((k, v))
                if w == tid or (w is None and self._intermediate.get((k, v)) == tid):
                    self.anomalies["future-read"].append({
                        "txn": self.txns[tid].name, "key": k, "read": v,
                        "explanation": f"{self.txns[tid].name} read key {k} as {_show(v)}, the value it "
                                       f"itself writes only later"})
                elif w is not None:
                    wr_s.append(w)
                    wr_d.append(tid)
                    readers[(k, v)].append(tid)
                else:
                    self._unwritten(k, v, tid)
        ww_s: list[int] = []
        ww_d: list[int] = []
        rw_s: list[int] = []
        rw_d: list[int] = []
        for k in list(self.versions):
            # only final writes are versions; a version edge from a value nobody wrote is dropped
            edges = {e: s for e, s in self.versions[k].items() if (k, e[1]) in writer and
                     (e[0] is None or (k, e[0]) in writer)}
            self.versions[k] = edges
            if self._has_cycle(k, edges):
                continue
            for (v1, v2) in edges:
                w2 = writer[(k, v2)]
                if v1 is not None:
                    w1 = writer[(k, v1)]
                    if w1 != w2:
                        ww_s.append(w1)
                        ww_d.append(w2)
                for r in readers.get((k, v1), ()):
                    if r != w2:
                        rw_s.append(r)
                        rw_d.append(w2)
        # nil before the first known versions of each key
        firsts: dict[Any, list] = defaultdict(list)
        preds = {(k, v2) for k, edges in self.versions.items() for (_, v2) in edges}
        for (k, v) in writer:
            if (k, v) not in preds and k not in self._cyclic:
                firsts[k].append(v)
        for k, vs in firsts.items():
            edges = self.versions[k]
            nil_readers = readers.get((k, None), ())
            for v in vs:
                edges[(None, v)] = INITIAL
                w = writer[(k, v)]
                for r in nil_readers:
                    if r != w:
                        rw_s.append(r)
                        rw_d.append(w)
        graph.add_many(ww_s, ww_d, WW)
        graph.add_many(wr_s, wr_d, WR)
        graph.add_many(rw_s, rw_d, RW)

    def _has_cycle(self, k: Any, edges: dict[tuple, str]) -> bool:
        if len(edges) < 2:
            return False
        ids: dict[Any, int] = {}
        src = [ids.setdefault(a, len(ids)) for a, _ in edges]
        dst = [ids.setdefault(b, len(ids)) for _, b in edges]
        comps = strongly_connected(len(ids), src, dst)
        if not comps:
            return False
        names = {i: v for v, i in ids.items()}
        cycle = [names[i] for i in comps[0]]
        self._cyclic.add(k)
        self.anomalies["cyclic-versions"].append({
            "key": k, "versions": list(reversed(cycle)),
            "txns": [self.txns[self.writer[(k, v)]].name for v in reversed(cycle) if (k, v) in self.writer],
            "explanation": f"key {k}'s versions {_show(tuple(reversed(cycle)))} are each known to come "
                           f"before the next and the last before the first ("
                           + "; ".join(sorted({s for e, s in edges.items()
                                               if e[0] in cycle and e[1] in cycle})) + ")"})
        return True

    def _unwritten(self, k: Any, v: Any, tid: int) -> None:
        reader = self.txns[tid].name
        inter = self._intermediate.get((k, v))
        failed = self._failed.get((k, v))
        if inter is not None and inter != tid:
            self.anomalies["G1b"].append({
                "txn": reader, "key": k, "read": v, "writer": self.txns[inter].name,
                "explanation": f"{reader} read key {k} as {_show(v)}, an intermediate write of "
                               f"{self.txns[inter].name}, which wrote key {k} again afterwards"})
        elif failed is not None:
            self.anomalies["G1a"].append({
                "txn": reader, "key": k, "read": v, "writer": failed.name,
                **({"resolved": True} if failed.resolved else {}),
                "explanation": f"{reader} read key {k} as {_show(v)}, written only by {failed.name}, "
                               f"{why_failed(failed)}"})
        elif inter is None:
            self.anomalies["garbage-read"].append({
                "txn": reader, "key": k, "read": v,
                "explanation": f"{reader} read key {k} as {_show(v)}, which no transaction ever wrote"})

    # --- explanations ----------------------------------------------------------------------

    def explain(self, a: int, b: int, t: int) -> tuple[Any, str]:
        A, B = self.txns[a], self.txns[b]
        if t == WR:
            for k, v in self._ext_reads(B):
                if v is not None and self.writer.get((k, v)) == a:
                    return k, f"{A.name} < {B.name} because {B.name} read {A.name}'s write of {v} to key {k}"
        if t == WW:
            for k, v2 in self._final_writes(B):
                for (v1, w2), why in self.versions.get(k, {}).items():
                    if w2 == v2 and v1 is not None and self.writer.get((k, v1)) == a:
                        return k, (f"{A.name} < {B.name} because {A.name}'s write of {v1} to key {k} "
                                   f"precedes {B.name}'s write of {v2} ({self._why(why, k, v1, v2)})")
        if t == RW:
            for k, v1 in self._ext_reads(A):
                for v2 in (v for kk, v in self._final_writes(B) if kk == k):
                    why = self.versions.get(k, {}).get((v1, v2))
                    if why is not None:
                        seen = "nil (the initial state)" if v1 is None else str(v1)
                        return k, (f"{A.name} < {B.name} because {A.name} read key {k} as {seen}, a "
                                   f"version before {B.name}'s write of {v2} ({self._why(why, k, v1, v2)})")
        raise ValueError(f"no {t} edge from {A.name} to {B.name}")  # pragma: no cover

    def _why(self, why: str, k: Any, v1: Any, v2: Any) -> str:
        if why == WFR:
            return f"{self.txns[self.writer[(k, v2)]].name} read {_show(v1)} before writing {v2}"
        if why == INITIAL:
            return "nil is every key's first version"
        return why

    @staticmethod
    def _ext_reads(t: Txn) -> list[tuple[Any, Any]]:
        seen: set = set()
        out = []
        for f, k, v in t.mops:
            if k in seen:
                continue
            seen.add(k)
            if f == READ:
                out.append((k, v))
        return out
