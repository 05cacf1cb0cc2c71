"""`ukehi-jepsen sim`: deterministic simulation of the real Ukehi, many seeds a minute.

Each seed is one simulated run (``harness.sim.runner``): swarm options (the workload too,
unless ``--workload`` names one), faults and ops all drawn from the seed, judged by the
workload's checkers and the white-box checkers. Seeds
run in worker processes (spawned with PYTHONHASHSEED=0, so a seed replays identically in
any process). A failing seed is stored as a run in the results store, like a real run, and
gets a replay command; ``--seed K`` replays one seed and prints its trace digest;
``--check-determinism`` runs every seed twice and fails on any digest difference. A failing
seed is shrunk first (``harness.sim.shrink``, ``--shrink-budget``): the shrunk schedule is
stored as a run of its own (with ``schedule.json``, replayed by ``--seed K --schedule F``)
and printed before the original.

Exit codes: 0 no failure, 1 some seed failed (or a digest differed), 254 bad arguments.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from typing import Any, Optional

import typer

from ..cli import EXIT_INVALID, EXIT_UNKNOWN, EXIT_VALID, BadArgument


def _one(args: tuple[int, Any, str, bool, bool, float]) -> dict[str, Any]:
    seed, settings, results_dir, twice, store, shrink_budget = args
    from harness.sim.runner import resolve_workload, run_seed
    from harness.sim.store import replay_command, store_result

    settings = resolve_workload(seed, settings)  # the drawn workload: replay, store and shrink name it
    r = run_seed(seed, settings, keep_world=store)
    out: dict[str, Any] = {"seed": seed, "valid": r.valid, "digest": r.digest, "virtual": r.virtual_seconds,
                           "wall": r.wall_seconds, "ops": r.ops, "failing": r.failing_checkers(),
                           "unknown": sorted(n for n, c in r.checkers.items() if c.get("valid") == "unknown"),
                           "replay": replay_command(seed, settings)}
    if twice:
        again = run_seed(seed, settings)
        out["digest_again"] = again.digest
    if r.failed and shrink_budget > 0:
        from harness.sim.shrink import shrink

        sr = shrink(seed, settings, r, budget_s=shrink_budget)
        if sr is not None:
            out["shrunk"] = {"checker": sr.checker, "fault_steps": sr.fault_steps, "client_ops": sr.client_ops,
                             "runs": sr.runs, "wall": round(sr.wall_seconds, 1), "complete": sr.complete}
            if store:
                kept = run_seed(seed, sr.settings, keep_world=True)  # the same run again, files kept
                path = store_result(kept, sr.settings, results_dir, shrunk_from=r)
                out["shrunk"]["run"] = path
                out["shrunk"]["replay"] = replay_command(seed, sr.settings, schedule=f"{path}/schedule.json")
    if store and r.failed:
        out["run"] = store_result(r, settings, results_dir)
    return out


def _print_shrunk(out: dict[str, Any]) -> None:
    """The shrunk schedule first: it is the one to read."""
    sh = out.get("shrunk")
    if not sh:
        return
    fk, ft = sh["fault_steps"]
    ok, ot = sh["client_ops"]
    print(f"  shrunk ({sh['checker']} still fails): {fk} of {ft} fault steps, {ok} of {ot} client ops "
          f"({sh['runs']} runs, {sh['wall']} s{'' if sh['complete'] else ', budget spent: not minimal'})"
          + (f" stored {sh['run']}" if sh.get("run") else ""), flush=True)
    if sh.get("replay"):
        print(f"  replay shrunk: {sh['replay']}", flush=True)


def _parse_options(items: list[str]) -> tuple[tuple[str, Any], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadArgument(f"--node-option {item!r}: give NAME=VALUE, e.g. unsafe_bug=stale-read")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def register(app: typer.Typer) -> None:
    @app.command()
    def sim(
        seeds: Optional[int] = typer.Option(None, help="how many seeds to run (from --start-seed)"),
        time_budget: Optional[float] = typer.Option(None, help="run seeds for this many wall seconds"),
        seed: Optional[int] = typer.Option(None, help="replay exactly this seed; prints its trace digest"),
        start_seed: int = typer.Option(0, help="first seed of a --seeds / --time-budget sweep"),
        workload: Optional[str] = typer.Option(None, help="workload the simulated clients run: register, kv, "
                                               "fencing, list-append or rw-register (the real workload's ops and "
                                               "checkers); default: each seed draws one (replay names it)"),
        nemesis: str = typer.Option("partition,kill,pause,clock,transfer,snapshot,membership,crash-after-vote,crash-after-ack,"
                                    "partition-in-flight,damage,slow,fall-after-append,stale-leader,vote-flip,slow-leader-clock,"
                                    "figure-eight",
                                    help="faults the swarm may draw from (comma list)"),
        duration: float = typer.Option(10.0, help="virtual seconds of workload and faults per seed"),
        node_option: list[str] = typer.Option([], "--node-option", help="NAME=VALUE for every node, e.g. "
                                               "unsafe_bug=stale-read (needs UKEHI_I_KNOW_THIS_IS_UNSAFE=1)"),
        workers: int = typer.Option(max(1, min(2, os.cpu_count() or 1)), help="worker processes"),
        check_determinism: bool = typer.Option(False, "--check-determinism",
                                               help="run every seed twice; fail on any trace-digest difference"),
        stop_at_first: bool = typer.Option(False, "--stop-at-first", help="stop at the first failing seed"),
        no_store: bool = typer.Option(False, "--no-store", help="do not store failing seeds as runs"),
        results_dir: str = typer.Option("results", help="where failing seeds are stored as runs"),
        shrink_budget: float = typer.Option(60.0, help="wall seconds to shrink each failing seed's schedule "
                                            "(delta debugging over fault steps, then client ops); 0: no shrinking"),
        max_steps: int = typer.Option(0, help="loop iterations a seed may run before it is stopped as a runaway "
                                      "(a livelock) and judged unknown; 0: automatic, about ten times the "
                                      "busiest correct seed measured"),
        schedule: Optional[str] = typer.Option(None, help="with --seed: replay a shrunk schedule "
                                               "(the schedule.json stored with a shrunk run)"),
    ) -> None:
        """Simulate the real Ukehi in virtual time over seeded fault schedules."""
        from harness.sim.runner import NEMESES, SWARM, WORKLOADS, SimSettings
        from ukehi.bugs import UnsafeBugRefused, check_unsafe_bug

        if workload is not None and workload not in WORKLOADS:
            raise BadArgument(f"--workload {workload!r}: choose one of {', '.join(WORKLOADS)}")
        chosen = tuple(n.strip() for n in nemesis.split(",") if n.strip())
        bad = [n for n in chosen if n not in NEMESES]
        if bad or not chosen:
            raise BadArgument(f"--nemesis {nemesis!r}: choose from {', '.join(NEMESES)}")
        options = _parse_options(node_option)
        bug = dict(options).get("unsafe_bug")
        try:
            check_unsafe_bug(bug)
        except UnsafeBugRefused as err:
            raise BadArgument(str(err)) from None
        if seed is None and seeds is None and time_budget is None:
            seeds = 20
        if max_steps < 0:
            raise BadArgument(f"--max-steps {max_steps}: give 0 (automatic) or a positive count")
        settings = SimSettings(workload=workload or SWARM, nemeses=chosen, duration=duration, node_options=options,
                               max_steps=max_steps)
        if schedule is not None:
            import dataclasses
            import json

            if seed is None:
                raise BadArgument("--schedule replays one seed's shrunk schedule: give --seed too")
            try:
                with open(schedule, encoding="utf-8") as f:
                    sched = json.load(f)
                only = sched.get("only_ops")
                settings = dataclasses.replace(
                    settings, skip_faults=tuple(int(i) for i in sched.get("skip_faults") or ()),
                    only_ops=None if only is None else tuple((int(w), int(n)) for w, n in only))
            except (OSError, ValueError, TypeError, AttributeError) as err:
                raise BadArgument(f"--schedule {schedule}: {err}") from None
        store = not no_store
        if seed is not None:
            out = _one((seed, settings, results_dir, check_determinism, store, shrink_budget if schedule is None else 0))
            print(f"seed {seed}: {'VALID' if out['valid'] is True else 'INVALID' if out['valid'] is False else 'UNKNOWN'}"
                  f"  digest {out['digest']}  virtual {out['virtual']:.1f} s in {out['wall']:.2f} s wall, {out['ops']} ops")
            if out["failing"]:
                print(f"  failed checkers: {', '.join(out['failing'])}")
            _print_shrunk(out)
            if "run" in out:
                print(f"  stored: {out['run']}")
            bad_digest = check_determinism and out["digest_again"] != out["digest"]
            if bad_digest:
                print(f"  NONDETERMINISTIC: second run digest {out['digest_again']}")
            if out["valid"] is False or bad_digest:
                raise typer.Exit(EXIT_INVALID)
            raise typer.Exit(EXIT_UNKNOWN if "event-budget" in out["unknown"] else EXIT_VALID)
        os.environ["PYTHONHASHSEED"] = "0"  # spawned workers inherit it: same seed, same trace anywhere
        ctx = multiprocessing.get_context("spawn")
        started = time.monotonic()
        done = failures = nondeterministic = unknown = runaways = 0
        virtual = 0.0
        failed: list[dict[str, Any]] = []

        # Pool.imap feeds its tasks from a thread that drains the generator as fast as it can:
        # without a bound, a --time-budget sweep queued seeds for the whole budget within its
        # first second and then ran every one of them (a 60 s budget ran on for minutes). The
        # semaphore keeps at most two seeds per worker queued, so the budget is checked when a
        # seed is about to start.
        slots = threading.BoundedSemaphore(2 * workers)
        # Set to end the sweep early (--stop-at-first): the feeder thread may be waiting on
        # ``slots`` in jobs(), and Pool.terminate() joins that thread, so it must be woken to
        # return first (it waited forever there: `sim --stop-at-first` hung at its first find).
        stopping = threading.Event()

        def jobs() -> Any:
            k = start_seed
            while seeds is None or k < start_seed + seeds:
                slots.acquire()
                if stopping.is_set():
                    return
                if time_budget is not None and time.monotonic() - started > time_budget:
                    return
                yield (k, settings, results_dir, check_determinism, store, shrink_budget)
                k += 1

        with ctx.Pool(workers) as pool:
            for out in pool.imap(_one, jobs()):
                slots.release()
                done += 1
                virtual += out["virtual"]
                if out["valid"] is False:
                    failures += 1
                    failed.append(out)
                    print(f"seed {out['seed']}: INVALID ({', '.join(out['failing'])})", flush=True)
                    _print_shrunk(out)
                    print("  original:" + (f" stored {out['run']}" if "run" in out else ""), flush=True)
                    print(f"  replay: {out['replay']}", flush=True)
                elif out["valid"] is not True:
                    unknown += 1  # no verdict: e.g. no op succeeded in a short window (stats)
                    runaways += "event-budget" in (out.get("unknown") or ())
                    print(f"seed {out['seed']}: UNKNOWN ({', '.join(out.get('unknown') or ()) or 'no verdict'})"
                          f"; replay: {out['replay']}", flush=True)
                if check_determinism and out.get("digest_again") != out["digest"]:
                    nondeterministic += 1
                    print(f"seed {out['seed']}: NONDETERMINISTIC digests {out['digest'][:16]} vs "
                          f"{str(out.get('digest_again'))[:16]}", flush=True)
                wall = time.monotonic() - started
                if done % 10 == 0 or (seeds is not None and done == seeds):
                    print(f"[{wall:6.1f} s] {done} seeds ({done / wall:.2f}/s), virtual {virtual:.0f} s "
                          f"({virtual / wall:.0f}x), failures {failures}", file=sys.stderr, flush=True)
                if stop_at_first and failures:
                    stopping.set()
                    try:
                        slots.release()  # wake the feeder if it waits: it sees ``stopping`` and ends
                    except ValueError:
                        pass  # every slot free: the feeder is not waiting (it already ended)
                    pool.terminate()
                    break
        wall = time.monotonic() - started
        shrinking = sum(f.get("shrunk", {}).get("wall", 0.0) for f in failed)
        print(f"sim: {done} seeds in {wall:.1f} s ({done / max(wall, 1e-9):.2f} seeds/s, "
              f"{virtual / max(wall, 1e-9):.0f} virtual s per wall s"
              + (f"; {shrinking:.0f} s of it shrinking" if shrinking else "") + f"), {failures} failing"
              + (f", {unknown} unknown" if unknown else "")
              + (f", {nondeterministic} nondeterministic" if check_determinism else ""))
        if failures or nondeterministic:
            raise typer.Exit(EXIT_INVALID)
        # A seed stopped as a runaway (a livelock) makes the sweep unknown; a seed whose stats
        # were unknown (nothing succeeded in its window) is listed and counted, as before.
        raise typer.Exit(EXIT_UNKNOWN if runaways else EXIT_VALID)
