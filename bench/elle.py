"""Benchmark of the Elle-style checker (checkers.elle): transactions checked per second.

Generated list-append histories (strict-serializable by construction, see
``checkers.elle.generate``): 4 micro-ops per transaction, half appends, 20 processes,
1,000 active keys (a key retires after 32 appends, as Elle's generator does), at 10k and
100k transactions (and 1M with --full); plus the 100k history with one acknowledged
append lost from every read after it, which must come out invalid. The goal (issue 14):
100,000 transactions checked in under 10 s on one core: judged on the checking process's
CPU time (it is single-threaded), since wall time on a shared machine counts other jobs
too; both are printed, with the load average.

    .venv/bin/python bench/elle.py [--full] [--sizes 10000,100000] [--model list-append]

Prints a table, and as the last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkers.elle import check  # noqa: E402
from checkers.elle.generate import generate  # noqa: E402
from checkers.history import Op  # noqa: E402

TARGET = {"txns": 100_000, "seconds": 10.0}
SHAPE = {"processes": 20, "keys": 1000, "mops": 4, "max_writes_per_key": 32}


def lose_one_append(history: list[Op]) -> list[Op]:
    """The history with one acknowledged append removed from every read: an append, from
    the second half, that a transaction begun after it completed did read. That read (and
    every other that saw it) now misses an acknowledged write, as when a cut-off leader's
    tail is lost."""
    invoked_at: dict = {}
    begun: list[int] = []  # per op: the index its transaction was invoked at
    for op in history:
        if op.type == "invoke":
            invoked_at[op.process] = op.index
        begun.append(invoked_at.get(op.process, op.index))
    victim = None
    for i in range(len(history) // 2, len(history)):
        op = history[i]
        if op.type != "ok":
            continue
        for f, k, v in op.value:
            if f != "append":
                continue
            if any(later.type == "ok" and begun[j] > op.index and
                   any(ff == "r" and kk == k and vv and v in vv for ff, kk, vv in later.value)
                   for j, later in enumerate(history[i + 1:], start=i + 1)):
                victim = (k, v)
                break
        if victim:
            break
    if victim is None:
        raise ValueError("no acknowledged append that a later transaction read")
    k, v = victim
    out = []
    for op in history:
        if op.type == "ok" and any(f == "r" and kk == k and vv and v in vv for f, kk, vv in op.value):
            value = tuple((f, kk, tuple(x for x in vv if x != v) if f == "r" and kk == k else vv)
                          for f, kk, vv in op.value)
            op = Op(index=op.index, time=op.time, process=op.process, type=op.type, f=op.f,
                    value=value, extra=op.extra)
        out.append(op)
    return out


def run_cell(n: int, model: str, lost: bool = False, seed: int = 1) -> dict[str, Any]:
    gc.collect()
    t0 = time.perf_counter()
    history = generate(n, model=model, seed=seed, **SHAPE)
    if lost:
        history = lose_one_append(history)
    generated = time.perf_counter() - t0
    t0 = time.perf_counter()
    c0 = time.process_time()
    result = check(history, model)
    cpu = time.process_time() - c0
    seconds = time.perf_counter() - t0
    del history
    # CPU time is the time on one core (the checker is single-threaded); wall time also
    # counts the other jobs of a shared machine
    return {"model": model, "txns": n, "lost_append": lost, "generate_s": round(generated, 2),
            "check_s": round(seconds, 2), "check_cpu_s": round(cpu, 2),
            "txns_per_s": round(n / seconds) if seconds else None,
            "txns_per_cpu_s": round(n / cpu) if cpu else None,
            "valid": result["valid"], "anomalies": result["anomaly_types"],
            "edges": result["graph"]["edges"], "phases_s": result["graph"]["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also 1,000,000 transactions")
    parser.add_argument("--sizes", help="comma-separated transaction counts (overrides the default)")
    parser.add_argument("--model", default="list-append", choices=["list-append", "rw-register"])
    args = parser.parse_args(argv)
    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--sizes takes numbers like 10000,100000, got {args.sizes!r}")
    else:
        sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])
    cells = [run_cell(n, args.model) for n in sizes]
    if args.model == "list-append":
        cells.append(run_cell(max(sizes), args.model, lost=True))
    print(f"{'model':<12} {'txns':>9} {'lost append':>11} {'cpu s':>7} {'txns/cpu s':>10} {'wall s':>7} "
          f"{'edges':>9}  verdict")
    for c in cells:
        print(f"{c['model']:<12} {c['txns']:>9,} {('yes' if c['lost_append'] else 'no'):>11} "
              f"{c['check_cpu_s']:>7.2f} {c['txns_per_cpu_s'] or 0:>10,} {c['check_s']:>7.2f} {c['edges']:>9,}  "
              f"{c['valid']} {' '.join(c['anomalies'])}")
    at_target = [c for c in cells if c["txns"] == TARGET["txns"] and not c["lost_append"]]
    summary = {
        "shape": SHAPE, "target": TARGET, "cells": cells,
        "target_met": bool(at_target) and at_target[0]["check_cpu_s"] < TARGET["seconds"],
        "load_average": list(os.getloadavg()),
        "valid_histories_valid": all(c["valid"] is True for c in cells if not c["lost_append"]),
        "lost_append_caught": all(c["valid"] is False for c in cells if c["lost_append"]),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
