"""Benchmark of the deterministic simulator (issue 13): time compression, seeds per minute,
and seeds-to-first-failure for each planted bug from a fixed starting seed.

    python bench/sim.py [--seeds 6] [--bug-budget-s 60] [--max-seeds 30] [--bugs a,b] [--codec-ratio]

Prints a readable table, then one JSON line last. Single process (one core). With
``--codec-ratio`` the speed seeds run twice in this one run, as the seed draws (most peer
messages as objects, the wire codec sampled: ukehi.sim.world) and with every message
through the codec (as between real nodes), so the ratio is measured on identical work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness.sim.runner as sim_runner  # noqa: E402
from harness.sim.runner import SimSettings, run_seed  # noqa: E402
from ukehi.bugs import KNOWN_BUGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6, help="correct-build seeds for the speed figures")
    ap.add_argument("--bug-budget-s", type=float, default=60.0, help="wall seconds per planted bug")
    ap.add_argument("--max-seeds", type=int, default=30, help="seeds per planted bug at most")
    ap.add_argument("--bugs", default=",".join(KNOWN_BUGS), help="comma list of planted bugs")
    ap.add_argument("--start-seed", type=int, default=0)
    ap.add_argument("--codec-ratio", action="store_true",
                    help="also run the speed seeds with every peer message through the wire codec")
    args = ap.parse_args()
    os.environ["UKEHI_I_KNOW_THIS_IS_UNSAFE"] = "1"
    seeds = range(args.start_seed, args.start_seed + args.seeds)
    run_seed(args.start_seed, SimSettings(duration=1.0))  # warm-up: imports, caches (not counted)
    speed, full = _speed(seeds, args.codec_ratio)
    if full is not None:
        speed["all_codec_virtual_per_cpu"] = full["virtual_per_cpu"]
        speed["sampled_codec_speedup_cpu"] = round(speed["virtual_per_cpu"] / full["virtual_per_cpu"], 2)
    invalid = speed["correct_build_not_valid"]
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
          f"{speed['messages_coded_pct']}% of peer messages through the wire codec, not valid: {invalid}")
    print(f"  of the wall time, judging (export, checkers, digest) took {speed['judge_pct']}%; the simulation "
          f"alone ran {speed['virtual_per_wall_sim']}x virtual/wall")
    if args.codec_ratio:
        print(f"same seeds, every peer message through the codec: {speed['all_codec_virtual_per_cpu']}x "
              f"virtual/CPU s (sampled codec {speed['sampled_codec_speedup_cpu']}x faster)")
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


class _Tally:
    def __init__(self) -> None:
        self.wall = self.virtual = self.cpu = self.judge = 0.0
        self.ops = self.invalid = self.sent = self.coded = self.seeds = 0

    def run(self, seed: int) -> None:
        cpu0 = time.process_time()
        r = run_seed(seed, SimSettings(duration=10.0), keep_world=True)
        self.cpu += time.process_time() - cpu0
        self.seeds += 1
        self.wall += r.wall_seconds
        self.judge += r.judge_seconds
        self.virtual += r.virtual_seconds
        self.ops += r.ops
        self.invalid += r.valid is not True
        self.sent += r.world.messages_sent
        self.coded += r.world.messages_coded

    def figures(self) -> dict:
        n, cpu, wall = self.seeds, self.cpu, self.wall
        # CPU seconds too: on a shared machine the wall clock also counts other people's work.
        return {"seeds": n, "virtual_per_wall": round(self.virtual / wall, 1),
                "virtual_per_cpu": round(self.virtual / cpu, 1), "seeds_per_cpu_min": round(60 * n / cpu, 1),
                "seeds_per_min": round(60 * n / wall, 1), "ops_per_wall_s": round(self.ops / wall, 1),
                "messages_coded_pct": round(100 * self.coded / max(1, self.sent), 1),
                # The figures above count judging too (run_seed's wall time ends after the
                # verdict): its share, and the simulation's own speed without it.
                "judge_pct": round(100 * self.judge / wall, 1),
                "virtual_per_wall_sim": round(self.virtual / max(1e-9, wall - self.judge), 1),
                "correct_build_not_valid": self.invalid}


def _speed(seeds: range, codec_ratio: bool) -> tuple[dict, dict | None]:
    """Correct-build speed over ``seeds`` as drawn and, with ``codec_ratio``, each seed right
    after again with every peer message through the wire codec (interleaved, so the
    machine's load drifts alike for both)."""
    drawn, full = _Tally(), _Tally()
    saved = sim_runner.WorldOptions

    # The runner builds the world's options from the seed; only the codec share is pinned. A
    # subclass, not functools.partial: the runner also reads class defaults off WorldOptions.
    @dataclasses.dataclass
    class AllCodec(saved):  # type: ignore[valid-type, misc]
        wire_every: int | None = 1

    for s in seeds:
        drawn.run(s)
        if codec_ratio:
            sim_runner.WorldOptions = AllCodec
            try:
                full.run(s)
            finally:
                sim_runner.WorldOptions = saved
    return drawn.figures(), (full.figures() if codec_ratio else None)


if __name__ == "__main__":
    main()
