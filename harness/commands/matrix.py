"""`ukehi-jepsen matrix`: the CorruptionPolicy matrix (harness/matrix.py has the logic)."""

from __future__ import annotations

import sys

import typer

from ..cli import EXIT_CRASHED, EXIT_VALID, BadArgument
from ..matrix import TARGETS, Cell, cell_from_run, parse_choices, plain_table, run_matrix, write_matrix
from ..spec import CORRUPTION_POLICIES, SpecError
from ..store import StoreError
from .run import build_spec


def register(app: typer.Typer) -> None:
    @app.command()
    def matrix(
        policies: str = typer.Option("all", help="comma list of corruption policies, or all"),
        targets: str = typer.Option("one,minority,majority", help="whose WAL is damaged: comma list of "
                                    "one, minority, majority"),
        workload: str = typer.Option("register", help="register or kv (their final reads show lost data)"),
        node_count: int = typer.Option(5, help="nodes per cluster (5 tells one from a minority)"),
        time_limit: float = typer.Option(20.0, help="seconds of each run's main phase"),
        nemesis_interval: float = typer.Option(6.0, help="mean seconds between WAL damage rounds"),
        rate: float = typer.Option(50.0, help="target ops/s over all clients"),
        seed: int = typer.Option(0, help="seed for ops and faults (repeat i uses seed + i)"),
        runs: int = typer.Option(1, help="runs per cell; the cell shows its worst outcome and how often"),
        results_dir: str = typer.Option("results", help="where runs and the matrix are stored"),
    ) -> None:
        """Run every CorruptionPolicy with WAL damage on one node, a minority and a majority; print the table.

        Exit 0 when every cell ran, whatever it found (a policy losing data is a finding);
        255 when the harness failed to run a cell; 254 for bad arguments.
        """
        from ..run import run_test

        try:
            chosen_policies = parse_choices(policies, CORRUPTION_POLICIES, "--policies")
            chosen_targets = parse_choices(targets, TARGETS, "--targets")
            if workload not in ("register", "kv"):
                raise ValueError(f"--workload {workload!r}: the matrix needs final reads of every key; "
                                 "use register or kv")
            if runs < 1:
                raise ValueError(f"--runs {runs}: give 1 or more")
            specs = {(p, t, i): build_spec(
                workload=workload, nemesis=f"disk-{t}", nemesis_interval=nemesis_interval, nodes=None,
                node_count=node_count, concurrency="2n", rate=rate, time_limit=time_limit, seed=seed + i,
                backend="local", read_mode="readindex", corruption_policy=p, results_dir=results_dir,
                leave_running=False, name=f"matrix-{p}-disk-{t}", node_option=[])
                for p in chosen_policies for t in chosen_targets for i in range(runs)}
        except (ValueError, SpecError, StoreError) as err:
            raise BadArgument(str(err)) from None

        def run_cell(policy: str, target: str, repeat: int) -> Cell:
            outcome = run_test(specs[(policy, target, repeat)])
            if outcome.interrupted:
                raise KeyboardInterrupt
            return cell_from_run(policy, target, outcome.run.path, outcome.verdict)

        def on_cell(cell: Cell) -> None:
            print(f"matrix: {cell.policy} x {cell.target}: {cell.label.upper()} "
                  f"({', '.join(cell.decided_by)}): {cell.summary}", flush=True)

        try:
            cells = run_matrix(chosen_policies, chosen_targets, run_cell, on_cell, repeats=runs)
        except KeyboardInterrupt:
            print("matrix interrupted; the runs so far are in the results store", file=sys.stderr)
            raise typer.Exit(130) from None
        # The command that makes this table again (the results dir aside).
        command = " ".join(["ukehi-jepsen", "matrix", "--policies", ",".join(chosen_policies),
                            "--targets", ",".join(chosen_targets), "--workload", workload,
                            "--node-count", str(node_count), "--time-limit", f"{time_limit:g}",
                            "--nemesis-interval", f"{nemesis_interval:g}", "--rate", f"{rate:g}",
                            "--seed", str(seed), "--runs", str(runs)])
        where = write_matrix(results_dir, cells, command, node_count)
        print()
        print(plain_table(cells))
        print(f"\nmatrix written to {where}/matrix.md and matrix.json")
        errors = [c for c in cells if c.outcome == "error"]
        if errors:
            print(f"{len(errors)} cell(s) could not be run: "
                  + "; ".join(f"{c.policy} x {c.target}: {c.summary}" for c in errors), file=sys.stderr)
        raise typer.Exit(EXIT_CRASHED if errors else EXIT_VALID)
