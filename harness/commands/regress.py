"""`ukehi-jepsen regress [--quick]`: the planted-bug regression suite (harness/regress.py).

Runs the correct build under mixed faults (every run must be valid) and each planted bug
under the schedule that exposes it (every run must be invalid, by the expected checker),
prints the table, stores it under ``<results>/regress/`` and exits 0 when the suite
passed, 1 when a bug escaped or the correct build was judged invalid (or unknown).
"""

from __future__ import annotations

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
    ) -> None:
        """Planted bugs must be caught, the correct build must pass; exit 0 if so, else 1."""
        from ukehi.bugs import KNOWN_BUGS

        from ..regress import escape_notes, format_table, run_suite
        from ..store import StoreError, check_writable

        names = tuple(n.strip() for n in (only or "").split(",") if n.strip())
        unknown = [n for n in names if n != "correct" and n not in KNOWN_BUGS]
        if unknown:
            raise BadArgument(f"--only {', '.join(unknown)}: choose from correct, {', '.join(KNOWN_BUGS)}")
        try:
            check_writable(results_dir)
        except StoreError as err:
            raise BadArgument(str(err)) from None
        from dataclasses import asdict

        from ..ci import CIError, Report, regress_cases

        try:  # --junit and --json (harness/ci.py), written once the suite has run
            report = Report("ukehi-jepsen regress", junit, json_out)
        except CIError as err:
            raise BadArgument(str(err)) from None
        rows, summary, stored = run_suite(results_dir, quick=quick, only=names)
        print()
        print(format_table(rows))
        print()
        for note in escape_notes(rows):
            print(f"- {note}")
        median = summary["median_first_violation_s"]
        print(f"planted bugs detected: {summary['detected']}/{summary['bugs']}"
              + (f" (escaped: {', '.join(summary['escaped'])})" if summary["escaped"] else "")
              + f"; correct-build runs: {summary['correct_runs']}, false alarms: {summary['false_alarms']}"
              + (f"; median first violation at {median} s of test time" if median is not None else ""))
        print(f"table stored in {stored}")
        report.cases = regress_cases(rows)
        report.finish({"ok": summary["ok"], "summary": summary, "rows": [asdict(r) for r in rows],
                       "table_dir": str(stored), "quick": quick})
        raise typer.Exit(EXIT_VALID if summary["ok"] else EXIT_INVALID)
