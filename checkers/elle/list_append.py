"""List-append: version orders from list prefixes, dependencies, non-cycle anomalies.

Every read returns a key's whole list, so the longest read of a key is a prefix of its
version order, and every other read must be a prefix of it (else *incompatible-order*).
Element ``i`` of the longest read was appended by the writer of ``longest[i]``:

- ww: the writer of ``longest[i]`` precedes the writer of ``longest[i+1]``;
- wr: the writer of a read's last element precedes the reader;
- rw: a reader of ``longest[:i]`` precedes the writer of ``longest[i]``.

An acknowledged (``ok``) append that no read shows is still in the version order, after
every element read (a read that missed it is a prefix of the final list): its writer
follows the writer of the last element read, and every reader of the whole longest list
precedes it. That is what exposes a lost append: the final read misses it, so the final
read precedes it, while it completed before the final read began.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from checkers.elle.graph import RW, WR, WW, Graph
from checkers.elle.txn import APPEND, READ, Txn, _show, why_failed


class ListAppend:
    name = "list-append"

    def __init__(self, txns: list[Txn], failed: list[Txn]) -> None:
        self.txns = txns
        self.anomalies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.writer: dict[tuple, int] = {}
        self.longest: dict[Any, tuple] = {}
        self.unseen: dict[Any, list[int]] = {}
        self._pos: dict[Any, dict[Any, int]] = {}
        self._failed = {(k, v): t for t in failed for f, k, v in t.mops if f == APPEND}
        self._intermediate: set[tuple] = set()
        self._ok_appends: dict[Any, list] = defaultdict(list)
        self._reads: dict[Any, list[tuple[int, tuple]]] = defaultdict(list)
        self._multi: dict[tuple, None] = {}  # (txn, key): appended to key more than once
        self._scan()

    # --- per transaction -------------------------------------------------------------------

    def _scan(self) -> None:
        writer = self.writer
        reads = self._reads
        ok_appends = self._ok_appends
        rmw: dict[tuple, list[int]] = defaultdict(list)
        for t in self.txns:
            ok = t.type == "ok"
            tid = t.id
            seen = set()
            repeated = False
            for f, k, v in t.mops:
                if k in seen:
                    repeated = True
                seen.add(k)
                if f == APPEND:
                    writer[(k, v)] = tid
                    if ok:
                        ok_appends[k].append(v)
                elif ok and f == READ:
                    reads[k].append((tid, () if v is None else v))
            if repeated:
                self._repeated_keys(t, ok, rmw)
        for (k, v), tids in rmw.items():
            if len(tids) > 1:
                names = [self.txns[i].name for i in tids]
                self.anomalies["lost-update"].append({
                    "key": k, "read": list(v), "txns": names,
                    "explanation": f"{', '.join(names)} all read key {k} as {_show(v)} and then "
                                   f"appended to it: each one's append is lost to the others"})

    def _repeated_keys(self, t: Txn, ok: bool, rmw: dict[tuple, list[int]]) -> None:
        """A transaction that touches a key more than once: intermediate appends, reads
        then appends (lost-update candidates), and its internal consistency."""
        last: dict[Any, Any] = {}
        first: dict[Any, tuple] = {}
        for f, k, v in t.mops:
            if f == APPEND:
                if k in last:
                    self._intermediate.add((k, last[k]))
                    self._multi[(t.id, k)] = None
                last[k] = v
                first.setdefault(k, (APPEND,))
            elif f == READ:
                first.setdefault(k, (READ, () if v is None else v))
        if ok:
            self._internal(t)
            for k, fv in first.items():
                if fv[0] == READ and k in last:
                    rmw[(k, fv[1])].append(t.id)

    def _internal(self, t: Txn) -> None:
        """Reads inside one transaction agree with its earlier reads and appends; no read
        shows an element the transaction appends only later."""
        known: dict[Any, tuple | None] = {}
        suffix: dict[Any, list] = {}
        mops = t.mops
        for i, (f, k, v) in enumerate(mops):
            if f == APPEND:
                prev = known.get(k)
                if prev is not None:
                    known[k] = prev + (v,)
                else:
                    known[k] = None
                    suffix.setdefault(k, []).append(v)
                continue
            if f != READ:
                continue
            v = () if v is None else tuple(v)
            later = [m[2] for m in mops[i + 1:] if m[0] == APPEND and m[1] == k]
            seen_later = [x for x in later if x in v]
            if seen_later:
                self.anomalies["future-read"].append({
                    "txn": t.name, "key": k, "read": list(v), "elements": seen_later,
                    "explanation": f"{t.name} read key {k} as {_show(v)}, which holds "
                                   f"{_show(tuple(seen_later))} that {t.name} itself appends only later"})
            if k in known:
                expected = known[k]
                if expected is not None:
                    bad = v != expected
                    want = _show(expected)
                else:
                    suf = tuple(suffix[k])
                    bad = v[len(v) - len(suf):] != suf if len(v) >= len(suf) else True
                    want = f"a list ending in {_show(suf)}"
                if bad:
                    self.anomalies["internal"].append({
                        "txn": t.name, "key": k, "read": list(v),
                        "explanation": f"{t.name} read key {k} as {_show(v)}, but its own earlier "
                                       f"reads and appends say it must be {want}"})
            known[k] = v
            suffix[k] = []

    # --- per key ---------------------------------------------------------------------------

    def add_edges(self, graph: Graph) -> None:
        writer = self.writer
        ww_s: list[int] = []
        ww_d: list[int] = []
        wr_s: list[int] = []
        wr_d: list[int] = []
        rw_s: list[int] = []
        rw_d: list[int] = []
        intermediate = self._intermediate
        for k, rs in self._reads.items():
            longest = max((v for _, v in rs), key=len)
            n = len(longest)
            compatible = True
            for tid, v in rs:
                if longest[:len(v)] != v:
                    # of the reads that disagree with this one, the first to complete: the
                    # anomaly is visible from then on (the longest read is often the final one)
                    other, seen = min(((t, w) for t, w in rs if _incompatible(v, w)),
                                      key=lambda tw: self.txns[tw[0]].complete or 0)
                    self.anomalies["incompatible-order"].append({
                        "key": k, "reads": [list(v), list(seen)],
                        "txns": [self.txns[tid].name, self.txns[other].name],
                        "explanation": f"key {k} was read as {_show(v)} by {self.txns[tid].name} and "
                                       f"as {_show(seen)} by {self.txns[other].name}: neither is a "
                                       f"prefix of the other, so no single order of appends explains both"})
                    compatible = False
                    break
            elements = set(longest) if compatible else {e for _, v in rs for e in v}
            if len(elements) != n or not compatible:
                self._duplicates(k, rs)
            ws = [writer.get((k, e)) for e in longest]
            if None in ws or not compatible:
                self._unwritten(k, rs, elements)
            if not compatible:
                continue
            self.longest[k] = longest
            if self._multi:
                self._torn_appends(k, longest)
            for i in range(n - 1):
                a = ws[i]
                b = ws[i + 1]
                if a is not None and b is not None and a != b:
                    ww_s.append(a)
                    ww_d.append(b)
            unseen = [writer[(k, v)] for v in self._ok_appends.get(k, ()) if v not in elements]
            if unseen:
                self.unseen[k] = unseen
                last = ws[-1] if ws else None
                if last is not None:
                    for u in unseen:
                        if u != last:
                            ww_s.append(last)
                            ww_d.append(u)
            for tid, v in rs:
                m = len(v)
                w = None
                if m:
                    w = ws[m - 1]
                    if w is not None and w != tid:
                        wr_s.append(w)
                        wr_d.append(tid)
                        if (k, v[-1]) in intermediate:
                            self._g1b(k, v, w, tid)
                if m < n:
                    nxt = ws[m]
                    # a read of another's intermediate append is G1b, not also a cycle
                    if nxt is not None and nxt != tid and nxt != w:
                        rw_s.append(tid)
                        rw_d.append(nxt)
                else:
                    for u in unseen:
                        if u != tid and u != w:
                            rw_s.append(tid)
                            rw_d.append(u)
        graph.add_many(ww_s, ww_d, WW)
        graph.add_many(wr_s, wr_d, WR)
        graph.add_many(rw_s, rw_d, RW)

    def _torn_appends(self, k: Any, longest: tuple) -> None:
        """One transaction's appends to a key enter the list together and in its order: a
        read that shows a later one without an earlier one, or them reversed, has no
        serial explanation (the cycle search cannot see it: both ends are one node)."""
        for t in {self.writer[(k, e)] for e in longest if (k, e) in self.writer}:
            if (t, k) not in self._multi:
                continue
            txn = self.txns[t]
            mine = [v for f, kk, v in txn.mops if f == APPEND and kk == k]
            where = [self._position(k, v) for v in mine]
            present = [p for p in where if p is not None]
            first_missing = where.index(None) if None in where else len(where)
            if present != sorted(present) or any(p is not None for p in where[first_missing:]):
                self.anomalies["incompatible-order"].append({
                    "key": k, "txns": [txn.name], "appends": mine, "read": list(longest),
                    "explanation": f"{txn.name} appended {_show(tuple(mine))} to key {k} in that order, "
                                   f"but key {k} was read as {_show(longest)}: an atomic transaction's "
                                   f"appends cannot be split or reordered"})

    def _duplicates(self, k: Any, rs: list[tuple[int, tuple]]) -> None:
        for tid, v in rs:
            if len(set(v)) != len(v):
                seen: set = set()
                dups = [e for e in v if e in seen or seen.add(e)]  # type: ignore[func-returns-value]
                self.anomalies["duplicate-elements"].append({
                    "txn": self.txns[tid].name, "key": k, "read": list(v), "duplicates": dups,
                    "explanation": f"{self.txns[tid].name} read key {k} as {_show(v)}: "
                                   f"{_show(tuple(dups))} appear more than once, but each was appended once"})
                return

    def _unwritten(self, k: Any, rs: list[tuple[int, tuple]], elements: set) -> None:
        for e in elements:
            if (k, e) in self.writer:
                continue
            tid, v = next((tid, v) for tid, v in rs if e in v)
            reader = self.txns[tid].name
            failed = self._failed.get((k, e))
            if failed is not None:
                self.anomalies["G1a"].append({
                    "txn": reader, "key": k, "element": e, "writer": failed.name,
                    **({"resolved": True} if failed.resolved else {}),
                    "explanation": f"{reader} read key {k} as {_show(v)}, which holds {e}, appended "
                                   f"only by {failed.name}, {why_failed(failed)}"})
            else:
                self.anomalies["garbage-read"].append({
                    "txn": reader, "key": k, "element": e,
                    "explanation": f"{reader} read key {k} as {_show(v)}, which holds {e}, "
                                   f"which no transaction ever appended to key {k}"})

    def _g1b(self, k: Any, v: tuple, w: int, tid: int) -> None:
        writer = self.txns[w]
        reader = self.txns[tid].name
        self.anomalies["G1b"].append({
            "txn": reader, "key": k, "element": v[-1], "writer": writer.name,
            "explanation": f"{reader} read key {k} as {_show(v)}, ending in {v[-1]}, an intermediate "
                           f"state of {writer.name}, which appended to key {k} again after {v[-1]}"})

    # --- explanations ----------------------------------------------------------------------

    def _position(self, k: Any, e: Any) -> int | None:
        pos = self._pos.get(k)
        if pos is None:
            pos = self._pos[k] = {x: i for i, x in enumerate(self.longest.get(k, ()))}
        return pos.get(e)

    def _appends(self, t: Txn) -> list[tuple[Any, Any]]:
        return [(k, v) for f, k, v in t.mops if f == APPEND]

    def explain(self, a: int, b: int, t: int) -> tuple[Any, str]:
        """(key, sentence) saying why ``a`` precedes ``b`` by a ``t`` edge."""
        A, B = self.txns[a], self.txns[b]
        if t == WR:
            for f, k, v in B.mops:
                if f == READ and v and self.writer.get((k, v[-1])) == a:
                    return k, (f"{A.name} < {B.name} because {B.name} read {A.name}'s append of "
                               f"{v[-1]} to key {k} (it read {_show(v)})")
        if t == WW:
            for k, y in self._appends(B):
                j = self._position(k, y)
                order = self.longest.get(k, ())
                if j is not None and j > 0 and self.writer.get((k, order[j - 1])) == a:
                    return k, (f"{A.name} < {B.name} because {B.name} appended {y} to key {k} right "
                               f"after {A.name}'s append of {order[j - 1]} (reads of key {k} show "
                               f"{_show(order[:j + 1])})")
                if j is None and b in self.unseen.get(k, ()) and order and \
                        self.writer.get((k, order[-1])) == a:
                    return k, (f"{A.name} < {B.name} because {B.name}'s acknowledged append of {y} to "
                               f"key {k} was never read, so it comes after every element read, the "
                               f"last being {A.name}'s {order[-1]}")
        if t == RW:
            for f, k, v in A.mops:
                if f != READ or k not in self.longest:
                    continue
                v = v or ()
                order = self.longest[k]
                if len(v) < len(order) and self.writer.get((k, order[len(v)])) == b:
                    return k, (f"{A.name} < {B.name} because {A.name} read key {k} as {_show(v)}, "
                               f"which misses {B.name}'s append of {order[len(v)]} that comes next")
                if len(v) == len(order) and b in self.unseen.get(k, ()):
                    y = next(y for kk, y in self._appends(B) if kk == k)
                    return k, (f"{A.name} < {B.name} because {A.name} read key {k} as {_show(v)}, "
                               f"which misses {B.name}'s acknowledged append of {y}, never read by "
                               f"anyone, so after every element read")
        raise ValueError(f"no {t} edge from {A.name} to {B.name}")  # pragma: no cover


def _incompatible(a: tuple, b: tuple) -> bool:
    """Neither list is a prefix of the other."""
    n = min(len(a), len(b))
    return a[:n] != b[:n]
