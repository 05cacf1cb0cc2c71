"""A brute-force (strict) serializability checker: the reference the Elle checker is
tested against on tiny histories.

It tries every serial order of the transactions that took effect (``ok`` ones always,
``info`` ones either way, ``fail`` ones never), replaying them against a map of keys and
checking every ``ok`` read, with no graph, no version order inference and nothing shared
with ``checkers.elle`` but the history type. ``strict=True`` keeps only orders that respect
real time (a transaction that completed before another began comes first). A key's
writes that report a ``raft_index`` must appear in index order (the log is the version
order, as the Elle checker trusts it to be). Exponential: at most 8 transactions.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Iterable

from checkers.history import NEMESIS, Op

MAX_TXNS = 8


def _pairs(history: Iterable[Op]) -> list[tuple[Op, Op | None]]:
    pending: dict[Any, Op] = {}
    order: list[Op] = []
    done: dict[int, Op] = {}
    for op in history:
        if op.process == NEMESIS:
            continue
        if op.type == "invoke":
            pending[op.process] = op
            order.append(op)
        else:
            done[id(pending.pop(op.process))] = op
    return [(inv, done.get(id(inv))) for inv in order]


def serializable(history: Iterable[Op], *, strict: bool = False) -> bool:
    txns = []
    for inv, comp in _pairs(history):
        kind = comp.type if comp is not None else "info"
        if kind == "fail":
            continue
        mops = [tuple(m) for m in (comp.value if kind == "ok" and comp.value is not None else inv.value)]
        raft = comp.extra.get("raft_index") if comp is not None and kind == "ok" else None
        txns.append({"ok": kind == "ok", "mops": mops, "start": inv.index,
                     "end": comp.index if kind == "ok" else None, "raft": raft})
    if len(txns) > MAX_TXNS:
        raise ValueError(f"brute force is for at most {MAX_TXNS} transactions, got {len(txns)}")
    optional = [i for i, t in enumerate(txns) if not t["ok"]]
    required = [i for i, t in enumerate(txns) if t["ok"]]
    for r in range(len(optional) + 1):
        for chosen in combinations(optional, r):
            if _search(txns, required + list(chosen), [], {}, strict):
                return True
    return False


def _raft_positions(t: dict) -> list[tuple[Any, int]]:
    """(key, index) of each final write that reports a log index."""
    raft = t["raft"]
    if raft is None:
        return []
    final: dict[Any, int] = {}
    for i, (f, k, _) in enumerate(t["mops"]):
        if f in ("w", "append"):
            final[k] = i
    out = []
    for k, i in final.items():
        idx = raft if isinstance(raft, int) else (raft[i] if i < len(raft) else None)
        if isinstance(idx, int):
            out.append((k, idx))
    return out


def _search(txns: list[dict], left: list[int], placed: list[int], state: dict, strict: bool) -> bool:
    if not left:
        return True
    for i in left:
        t = txns[i]
        if strict and any(txns[j]["end"] is not None and txns[j]["end"] < t["start"]
                          for j in left if j != i):
            continue  # someone who had to come first is still waiting
        if any(k == k2 and idx > idx2 for k, idx in _raft_positions(t)
               for j in left if j != i for k2, idx2 in _raft_positions(txns[j])):
            continue  # a write with an earlier log index to the same key is still waiting
        new_state = _apply(t, state)
        if new_state is None:
            continue
        rest = [j for j in left if j != i]
        if _search(txns, rest, placed + [i], new_state, strict):
            return True
    return False


def _apply(t: dict, state: dict) -> dict | None:
    """The state after ``t``, or None when one of its (ok) reads cannot be what it saw."""
    s = dict(state)
    for f, k, v in t["mops"]:
        if f == "append":
            s[k] = s.get(k, ()) + (v,)
        elif f == "w":
            s[k] = v
        elif f == "r" and t["ok"]:
            have = s.get(k)
            if isinstance(v, (list, tuple)) or (v is None and isinstance(have, tuple)):
                if tuple(v or ()) != (have or ()):
                    return None
            elif v != have:
                return None
    return s
