"""Strict-serializable transactional histories by construction, for benchmarks and tests.

``processes`` clients each run one transaction at a time; a step either invokes a new
transaction on an idle client or completes a running one, which applies it atomically
at that moment (so the apply order respects real time). Keys come from a pool of
``keys`` active keys; a key that has taken ``max_writes_per_key`` writes is retired and
a fresh one takes its place (Elle's generator does the same, so lists stay short and
checking time grows linearly with history length).
"""

from __future__ import annotations

import random
from typing import Any

from checkers.history import Op


def generate(n_txns: int, *, model: str = "list-append", processes: int = 20, keys: int = 1000,
             mops: int = 4, max_writes_per_key: int = 32, read_fraction: float = 0.5,
             info_fraction: float = 0.0, seed: int = 0) -> list[Op]:
    """A history of ``n_txns`` transactions of ``mops`` micro-ops each. With
    ``info_fraction``, that share of transactions end ``info`` (half of them applied).
    rw-register completions report ``raft_index`` (the apply position)."""
    rng = random.Random(seed)
    write_f = "append" if model == "list-append" else "w"
    pool = list(range(keys))
    next_key = keys
    writes = [0] * keys  # per pool slot
    state: dict[int, Any] = {}
    next_value = 0
    ops: list[Op] = []
    running: dict[int, tuple[int, list]] = {}
    idle = list(range(processes))
    busy: list[int] = []
    next_process = processes
    started = 0
    applied = 0
    rand = rng.random
    randrange = rng.randrange
    while started < n_txns or busy:
        if idle and started < n_txns and (not busy or rand() < 0.5):
            p = idle.pop(randrange(len(idle)))
            txn = []
            for _ in range(mops):
                slot = randrange(keys)
                k = pool[slot]
                if rand() < read_fraction:
                    txn.append(["r", k, None])
                else:
                    next_value += 1
                    txn.append([write_f, k, next_value])
                    writes[slot] += 1
                    if writes[slot] >= max_writes_per_key:
                        pool[slot] = next_key
                        next_key += 1
                        writes[slot] = 0
            ops.append(Op(index=len(ops), time=len(ops) * 1000, process=p, type="invoke", f="txn",
                          value=tuple((f, k, v) for f, k, v in txn)))
            running[p] = (len(ops) - 1, txn)
            busy.append(p)
            started += 1
            continue
        p = busy.pop(randrange(len(busy)))
        _, txn = running.pop(p)
        info = info_fraction and rand() < info_fraction
        applies = not info or rand() < 0.5
        if applies:
            local: dict[int, Any] = {}
            for m in txn:
                f, k, v = m
                if f == "r":
                    cur = local[k] if k in local else state.get(k)
                    m[2] = (tuple(cur) if cur is not None else ()) if write_f == "append" else cur
                elif f == "append":
                    cur = local[k] if k in local else state.get(k)
                    local[k] = (cur or []) + [v] if k not in local else cur + [v]
                else:
                    local[k] = v
            state.update(local)
            applied += 1
        extra = {"raft_index": applied} if model == "rw-register" and applies and not info else {}
        if info:
            ops.append(Op(index=len(ops), time=len(ops) * 1000, process=p, type="info", f="txn",
                          value=tuple((f, k, None if f == "r" else v) for f, k, v in txn)))
            p_new = next_process
            next_process += 1
            idle.append(p_new)
        else:
            ops.append(Op(index=len(ops), time=len(ops) * 1000, process=p, type="ok", f="txn",
                          value=tuple((f, k, v) for f, k, v in txn), extra=extra))
            idle.append(p)
    return ops
