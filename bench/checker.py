"""Benchmark of the linearizability checker: operations checked per second and peak memory.

Generated cas-register histories (linearizable by construction, see
``checkers.generate``) of 1,000 to 100,000 operations, with 5, 20 and 50 concurrent
processes over 1, 10 and 100 keys, with 0% and 5% ``info`` ops; plus adversarial
histories that must end ``unknown`` within the time budget; plus, optionally, history
files given on the command line (e.g. Porcupine's ``kv/c50-ok.txt``) to compare with
Porcupine's own speed.

Each cell runs in a fresh forked process, so its peak memory (the rise of the
process's peak RSS during the check) is its own.  The target is at least 20,000 ops/s
on 100,000-operation histories with 20 processes over 100 keys.

    .venv/bin/python bench/checker.py [--quick] [--budget S] [--file PATH ...]

Prints a table, and as the last line one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checkers.checker import check_operations  # noqa: E402
from checkers.generate import generate_history  # noqa: E402
from checkers.mapping import infer_model, to_operations  # noqa: E402
from checkers.model import Operation  # noqa: E402
from checkers.models import READ, WRITE, make_model  # noqa: E402
from checkers.readers import read_history  # noqa: E402

TARGET = {"ops": 100_000, "processes": 20, "keys": 100, "ops_per_s": 20_000}


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(check: Callable[[], Any]) -> tuple[Any, float, float, float, str]:
    """(result, wall seconds, CPU seconds of this process, peak MiB above the start,
    how memory was measured).  CPU time is shown too because on a shared machine the
    wall time also counts other people's work."""
    gc.collect()
    if _reset_peak_rss() and _status_kib("VmRSS") is not None:
        base = _status_kib("VmRSS") or 0
        started, cpu = time.perf_counter(), time.process_time()
        result = check()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = _status_kib("VmHWM") or base
        return result, elapsed, cpu, max(peak - base, 0) / 1024, "rss"
    started, cpu = time.perf_counter(), time.process_time()
    result = check()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    tracemalloc.start()
    check()
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, cpu, peak_bytes / 2**20, "tracemalloc"


def _adversarial(n_keys: int, width: int = 26) -> list[Operation]:
    """Per key: ``width`` overlapping writes, then a read of a value never written.
    Proving it illegal means trying every subset of the writes."""
    ops: list[Operation] = []
    for k in range(n_keys):
        key = f"k{k}"
        ops += [Operation(i, (WRITE, key, i, None), i, None, 1000 + i) for i in range(width)]
        ops.append(Operation(width, (READ, key, None, None), 2000, -1, 2001))
    return ops


def _cell(spec: dict[str, Any], budget: float) -> dict[str, Any]:
    model = make_model("cas-register")
    if spec["kind"] == "generated":
        history = generate_history("cas-register", n_ops=spec["ops"], n_processes=spec["processes"],
                                   n_keys=spec["keys"], info_fraction=spec["info"], seed=spec.get("seed", 1))
        operations = to_operations(history, "cas-register")
    elif spec["kind"] == "adversarial":
        operations = _adversarial(spec["keys"])
    else:
        loaded = read_history(spec["path"])
        name = {"jepsen-log": "cas-register", "porcupine-kv": "porcupine-kv"}.get(loaded.format) \
            or infer_model(loaded.ops)
        model = make_model(name)
        operations = to_operations(loaded.ops, name, loaded.conventions)
        spec = dict(spec, ops=len(operations), model=name)
    result, elapsed, cpu, peak_mib, how = _measure(lambda: check_operations(model, operations, budget))
    return dict(spec, verdict=result.value, seconds=round(elapsed, 3), cpu_seconds=round(cpu, 3),
                ops_per_s=round(len(operations) / elapsed) if elapsed > 0 else None,
                peak_mib=round(peak_mib, 1), memory=how)


def _child(conn: Any, spec: dict[str, Any], budget: float) -> None:
    try:
        conn.send(_cell(spec, budget))
    except Exception as err:  # noqa: BLE001 - report the cell's failure, keep the bench going
        conn.send(dict(spec, verdict="error", error=repr(err)))
    conn.close()


def run_cell(spec: dict[str, Any], budget: float) -> dict[str, Any]:
    """Run one cell in a fresh process (own memory peak); a hard wall limit backs the budget."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, spec, budget))
    proc.start()
    child.close()
    wall = budget * 3 + 120  # generation of 100k ops plus the budget, with room
    if parent.poll(wall):
        out = parent.recv()
    else:
        proc.kill()
        out = dict(spec, verdict="hang", seconds=wall)
    proc.join()
    return out


def matrix(quick: bool) -> list[dict[str, Any]]:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    cells = []
    for n in sizes:
        for processes in (5, 20, 50):
            for keys in (1, 10, 100):
                for info in (0.0, 0.05):
                    cells.append({"kind": "generated", "ops": n, "processes": processes, "keys": keys,
                                  "info": info})
    if quick:
        cells.append({"kind": "generated", **{k: TARGET[k] for k in ("ops", "processes", "keys")},
                      "info": 0.05})
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k histories only, plus the target cell")
    parser.add_argument("--budget", type=float, default=5.0, help="time limit per check, seconds (default 5)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="also time this history file (any format `ukehi-jepsen check` reads), "
                             "e.g. Porcupine's kv/c50-ok.txt; repeatable")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive seconds")
    for path in args.file:
        if not Path(path).is_file():
            parser.error(f"--file {path}: no such file")

    rows: list[dict[str, Any]] = []
    header = (f"{'kind':<12}{'ops':>8}{'procs':>6}{'keys':>6}{'info':>6}  {'verdict':<8}{'s':>8}{'cpu s':>8}"
              f"{'ops/s':>10}{'MiB':>8}")
    print(header)
    print("-" * len(header))

    def show(row: dict[str, Any]) -> None:
        rows.append(row)
        label = row["kind"] if row["kind"] != "file" else Path(row["path"]).name[:11]
        info = f"{row.get('info', 0) * 100:.0f}%" if "info" in row else "-"
        print(f"{label:<12}{row.get('ops', '-'):>8}{row.get('processes', '-'):>6}{row.get('keys', '-'):>6}"
              f"{info:>6}  {row['verdict']:<8}{row.get('seconds', 0):>8.2f}{row.get('cpu_seconds', 0):>8.2f}"
              f"{row.get('ops_per_s') or 0:>10}"
              f"{row.get('peak_mib', 0):>8.1f}", flush=True)

    for spec in matrix(args.quick):
        show(run_cell(spec, args.budget))
    for keys in (1, 100):
        show(run_cell({"kind": "adversarial", "ops": keys * 27, "keys": keys}, args.budget))
    for path in args.file:
        show(run_cell({"kind": "file", "path": path}, args.budget * 12))

    target_rows = [r for r in rows if r["kind"] == "generated" and r["ops"] == TARGET["ops"]
                   and r["processes"] == TARGET["processes"] and r["keys"] == TARGET["keys"]]
    target_speed = min((r["ops_per_s"] or 0 for r in target_rows if r["verdict"] == "ok"), default=None)
    adversarial_ok = all(r["verdict"] == "unknown" and r["seconds"] <= args.budget + 2
                         for r in rows if r["kind"] == "adversarial")
    hangs = [r for r in rows if r["verdict"] in ("hang", "error")]
    print()
    print(f"target: >= {TARGET['ops_per_s']} ops/s on {TARGET['ops']} ops, {TARGET['processes']} processes, "
          f"{TARGET['keys']} keys: {target_speed if target_speed is not None else 'n/a'} ops/s"
          f" ({'met' if target_speed and target_speed >= TARGET['ops_per_s'] else 'NOT met'})")
    print(f"adversarial histories unknown within the budget: {'yes' if adversarial_ok else 'NO'}; "
          f"hangs or errors: {len(hangs)}")
    summary = {"budget_s": args.budget, "target": dict(TARGET, measured_ops_per_s=target_speed,
                                                       met=bool(target_speed and target_speed >= TARGET["ops_per_s"])),
               "adversarial_unknown_in_budget": adversarial_ok, "hangs_or_errors": len(hangs), "cells": rows}
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if not hangs else 1


if __name__ == "__main__":
    sys.exit(main())
