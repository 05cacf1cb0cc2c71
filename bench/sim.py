"""Benchmark of the deterministic simulator (issue 13): time compression, seeds per minute,
and seeds-to-first-failure for each planted bug from a fixed starting seed.

    python bench/sim.py [--seeds 6] [--bug-budget-s 60] [--max-seeds 30] [--bugs a,b]

Prints a readable table, then one JSON line last. Single process (one core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.sim.runner import SimSettings, run_seed  # noqa: E402
from ukehi.bugs import KNOWN_BUGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6, help="correct-build seeds for the speed figures")
    ap.add_argument("--bug-budget-s", type=float, default=60.0, help="wall seconds per planted bug")
    ap.add_argument("--max-seeds", type=int, default=30, help="seeds per planted bug at most")
    ap.add_argument("--bugs", default=",".join(KNOWN_BUGS), help="comma list of planted bugs")
    ap.add_argument("--start-seed", type=int, default=0)
    args = ap.parse_args()
    os.environ["UKEHI_I_KNOW_THIS_IS_UNSAFE"] = "1"
    settings = SimSettings(duration=10.0)
    wall = virtual = 0.0
    ops = 0
    invalid = 0
    cpu0 = time.process_time()
    for s in range(args.start_seed, args.start_seed + args.seeds):
        r = run_seed(s, settings)
        wall += r.wall_seconds
        virtual += r.virtual_seconds
        ops += r.ops
        invalid += r.valid is not True
    cpu = time.process_time() - cpu0
    # CPU seconds too: on a shared machine the wall clock also counts other people's work.
    speed = {"seeds": args.seeds, "virtual_per_wall": round(virtual / wall, 1),
             "virtual_per_cpu": round(virtual / cpu, 1), "seeds_per_cpu_min": round(60 * args.seeds / cpu, 1),
             "seeds_per_min": round(60 * args.seeds / wall, 1), "ops_per_wall_s": round(ops / wall, 1),
             "correct_build_not_valid": invalid}
    rows = []
    for bug in [b for b in args.bugs.split(",") if b]:
        st = SimSettings(duration=10.0, node_options=(("unsafe_bug", bug),))
        started = time.monotonic()
        found = None
        tried = 0
        checker: list[str] = []
        for s in range(args.start_seed, args.start_seed + args.max_seeds):
            if time.monotonic() - started > args.bug_budget_s:
                break
            r = run_seed(s, st)
            tried += 1
            if r.failed:
                found, checker = s - args.start_seed + 1, r.failing_checkers()
                break
        rows.append({"bug": bug, "seeds_to_first_failure": found, "seeds_tried": tried,
                     "wall_s": round(time.monotonic() - started, 1), "checkers": checker})
    print(f"correct build: {args.seeds} seeds of 10 virtual s: {speed['virtual_per_wall']}x virtual/wall, "
          f"{speed['seeds_per_min']} seeds/min ({speed['virtual_per_cpu']}x and {speed['seeds_per_cpu_min']} seeds "
          f"per CPU s/min), {speed['ops_per_wall_s']} client ops per wall s, "
          f"not valid: {invalid}")
    print(f"{'planted bug':24} {'seeds to 1st failure':>20} {'tried':>6} {'wall s':>7}  checkers")
    for row in rows:
        f = row["seeds_to_first_failure"]
        print(f"{row['bug']:24} {('-' if f is None else f):>20} {row['seeds_tried']:>6} {row['wall_s']:>7}  "
              f"{','.join(row['checkers'])}")
    found = [r["seeds_to_first_failure"] for r in rows if r["seeds_to_first_failure"] is not None]
    found.sort()
    median = found[len(found) // 2] if found else None
    print(json.dumps({"bench": "sim", **speed, "bugs_found": len(found), "bugs": len(rows),
                      "median_seeds_to_first_failure": median, "per_bug": rows}))


if __name__ == "__main__":
    main()
