"""`ukehi-jepsen regress [--quick]`: the planted-bug regression suite (harness/regress.py).

Runs the correct build under mixed faults (every run must be valid) and each planted bug
under the schedule that exposes it (every run must be invalid, by the expected checker),
prints the table, stores it under ``<results>/regress/`` and exits 0 when the suite
passed, 1 when a bug escaped (every one of its ``--attempts`` runs, default 3, missed
it) or the correct build was judged invalid (or unknown).

The simulated column (harness/regress_sim.py, on unless ``--no-sim``; ``--sim-only`` runs
only it) searches each bug with ``ukehi-jepsen sim`` over a fixed count of seeds; it fails
the suite only on a correct-build seed that fails or on a bug the case table records as
found within the budget that is no longer found. "not found (sim)" never fails it.
"""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..cli import EXIT_INVALID, EXIT_VALID, BadArgument


def register(app: typer.Typer) -> None:
    @app.command()
    def regress(
        quick: bool = typer.Option(False, "--quick", help="shorter runs (CI): every bug, a few minutes in all"),
        results_dir: str = typer.Option("results", help="where runs and the table are stored"),
        only: Optional[str] = typer.Option(None, help="comma list of bug names (or 'correct') to run only those"),
        junit: Optional[str] = typer.Option(None, help="write JUnit XML to this file: one test case per case (CI)"),
        json_out: bool = typer.Option(False, "--json", help="print the table as JSON on stdout; the rest goes "
                                      "to stderr (CI)"),
        sim_seeds: Optional[int] = typer.Option(None, help="the simulated column's budget: seeds per bug and for "
                                                "the correct build, from seed 0 (default 30, 10 with --quick)"),
        sim_family_seeds: Optional[int] = typer.Option(None, help="then seeds 0..N-1 of each targeted fault "
                                                       "family of the simulator alone (figure-eight, stale-leader, "
                                                       "...; default 3, 1 with --quick, 0: none)"),
        attempts: int = typer.Option(3, help="runs per planted bug: a run that misses its bug is followed by one "
                                     "with the next seed, until one detects it (the table says which did; "
                                     "the correct build always runs once)"),
        no_sim: bool = typer.Option(False, "--no-sim", help="real runs only, no simulated column"),
        sim_only: bool = typer.Option(False, "--sim-only", help="only the simulated column: deterministic, no "
                                      "real cluster needed (CI)"),
        sim_workers: int = typer.Option(max(1, min(2, os.cpu_count() or 1)), help="worker processes for the "
                                        "simulated column (the result does not depend on it)"),
    ) -> None:
        """Planted bugs must be caught, the correct build must pass; exit 0 if so, else 1."""
        from ukehi.bugs import KNOWN_BUGS

        from ..regress import escape_notes, format_table, run_suite
        from ..store import StoreError, check_writable

        from ..regress_sim import (SIM_FAMILY_SEEDS, SIM_FAMILY_SEEDS_QUICK, SIM_SEEDS, SIM_SEEDS_QUICK,
                                   format_sim_table, sim_notes)

        if no_sim and sim_only:
            raise BadArgument("--no-sim and --sim-only exclude each other: give one")
        if sim_seeds is not None and (sim_seeds < 1 or no_sim):
            raise BadArgument(f"--sim-seeds {sim_seeds}: give a count of at least 1 (and not with --no-sim)")
        if sim_family_seeds is not None and (sim_family_seeds < 0 or no_sim):
            raise BadArgument(f"--sim-family-seeds {sim_family_seeds}: give a count of at least 0 (0: no family "
                              "runs alone; and not with --no-sim)")
        if attempts < 1:
            raise BadArgument(f"--attempts {attempts}: give at least 1 (1: every bug gets one run)")
        if sim_workers < 1:
            raise BadArgument(f"--sim-workers {sim_workers}: give at least 1")
        budget = None if no_sim else (sim_seeds or (SIM_SEEDS_QUICK if quick else SIM_SEEDS))
        family_seeds = 0 if no_sim else (sim_family_seeds if sim_family_seeds is not None
                                         else SIM_FAMILY_SEEDS_QUICK if quick else SIM_FAMILY_SEEDS)
        names = tuple(n.strip() for n in (only or "").split(",") if n.strip())
        unknown = [n for n in names if n != "correct" and n not in KNOWN_BUGS]
        if unknown:
            raise BadArgument(f"--only {', '.join(unknown)}: choose from correct, {', '.join(KNOWN_BUGS)}")
        try:
            check_writable(results_dir)
        except StoreError as err:
            raise BadArgument(str(err)) from None
        from dataclasses import asdict

        from ..ci import CIError, Report, regress_cases, regress_sim_cases
        from ..regress_sim import SimRow

        try:  # --junit and --json (harness/ci.py), written once the suite has run
            report = Report("ukehi-jepsen regress", junit, json_out)
        except CIError as err:
            raise BadArgument(str(err)) from None
        rows, summary, stored = run_suite(results_dir, quick=quick, only=names, sim_seeds=budget,
                                          sim_family_seeds=family_seeds,
                                          sim_only=sim_only, sim_workers=sim_workers, attempts=attempts)
        if rows:
            print()
            print(format_table(rows))
            print()
            for note in escape_notes(rows):
                print(f"- {note}")
            median = summary["median_first_violation_s"]
            retried = summary["detected"] - summary["detected_first_run"]
            print(f"planted bugs detected: {summary['detected']}/{summary['bugs']}"
                  + (f" ({retried} of them on a later run; first runs detected {summary['detected_first_run']})"
                     if retried else "")
                  + (f" (escaped: {', '.join(summary['escaped'])})" if summary["escaped"] else "")
                  + f"; correct-build runs: {summary['correct_runs']}, false alarms: {summary['false_alarms']}"
                  + (f"; median first violation at {median} s of test time" if median is not None else ""))
        sim = summary.get("sim")
        sim_rows = [SimRow(**r) for r in sim["rows"]] if sim else []
        if sim:
            print(f"\nsimulated column (seeds {sim_rows[0].span if sim_rows else budget} per row):\n")
            print(format_sim_table(sim_rows))
            print()
            for note in sim_notes(sim_rows):
                print(f"- {note}")
            steps = sim["median_seeds_to_first_failure"]
            print(f"sim: planted bugs found {sim['found']}/{sim['bugs']}"
                  + (f" (not found: {', '.join(sim['not_found'])})" if sim["not_found"] else "")
                  + (f" (not run: {', '.join(sim['not_run'])})" if sim["not_run"] else "")
                  + (f" (LOST: {', '.join(sim['lost'])})" if sim["lost"] else "")
                  + (f"; median seeds to first failure {steps}" if steps is not None else "")
                  + f"; correct build: {sim['correct_failures']} failing of {sim['correct_seeds']} seeds")
        print(f"table stored in {stored}")
        report.cases = regress_cases(rows) + regress_sim_cases(sim_rows)
        report.finish({"ok": summary["ok"], "summary": summary, "rows": [asdict(r) for r in rows],
                       "table_dir": str(stored), "quick": quick})
        raise typer.Exit(EXIT_VALID if summary["ok"] else EXIT_INVALID)
