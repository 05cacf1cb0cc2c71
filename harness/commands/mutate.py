"""`ukehi-jepsen mutate`: the mutation score of the unit tests and of the harness (logic in harness/mutation/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..cli import EXIT_CRASHED, EXIT_INVALID, EXIT_VALID, BadArgument
from ..mutation.runner import DEFAULT_HARNESS_RUNS, DEFAULT_UNIT_TESTS
from ..mutation.simbudget import DEFAULT_SIM_BUDGET


def _project_root() -> Path:
    """The checkout this harness was imported from (the directory holding harness/ and ukehi/)."""
    return Path(__file__).resolve().parents[2]


def register(app: typer.Typer) -> None:
    @app.command()
    def mutate(
        paths: str = typer.Option("ukehi/raft,ukehi/storage,ukehi/kv.py,ukehi/fencing.py,ukehi/node/driver.py",
                                  help="comma list of files or directories to mutate, relative to the project"),
        operators: str = typer.Option("all", help="comma list of mutation operators, or all: cmp_flip, "
                                      "int_plus1, int_minus1, floordiv_plus1, floordiv_minus1, drop_stmt, "
                                      "swap_if, and_or, negate_return"),
        seed: int = typer.Option(0, help="seed of the sample"),
        sample: int = typer.Option(30, "--sample", "--max-mutants",
                                   help="how many mutants to run, drawn with --seed (0 = every mutant)"),
        mutant: Optional[List[str]] = typer.Option(None, help="run this mutant id (path:line:col:operator); repeatable"),
        list_only: bool = typer.Option(False, "--list", help="print the mutants that would run, then exit"),
        unit_only: bool = typer.Option(False, "--unit-only", help="run the unit tests only"),
        harness_only: bool = typer.Option(False, "--harness-only", help="run the harness only"),
        harness_for: str = typer.Option("all", help="all, or unit-killed: harness runs only for mutants the "
                                        "unit tests killed (faster; no harness-only kills are found)"),
        harness_run: Optional[List[str]] = typer.Option(
            None, help="one harness run per mutant as WORKLOAD/NEMESIS/SECONDS/SEED[/KEY=VALUE,...] (node "
            "options, and nodes=N for the node count; NEMESIS default = the run's default mix); repeatable; "
            "'none' = no real runs (default: " + ", ".join(r.label for r in DEFAULT_HARNESS_RUNS) + ")"),
        harness_sim: str = typer.Option(DEFAULT_SIM_BUDGET.label, help="simulator part of the harness budget: "
                                        "SEEDS[:SECONDS], SEEDS a count (16 = swarm seeds 0-15) or a comma list "
                                        "of swarm seeds and ranges (0-15) and NAME@RANGE parts, each seed of them "
                                        "run as `sim --nemesis NAME` alone (figure-eight@0-2); SECONDS each "
                                        "seed's wall limit (default 5x the slowest unmutated seed, at least "
                                        "30 s); 'none' = no sim"),
        triage: str = typer.Option("", help="the triage registry (TOML, [[mutant]] tables); default "
                                   "harness/mutation/triage.toml; 'none' = no triage"),
        check_triage: bool = typer.Option(False, "--check-triage",
                                          help="match the triage registry against every mutant of --paths at "
                                          "--rev, print what each entry marks, exit 1 if an entry is stale "
                                          "(matches no mutant) or ambiguous"),
        skip_runs_after_sim_kill: bool = typer.Option(False, "--skip-runs-after-sim-kill",
                                                      help="a mutant the sim killed skips the real runs (faster; "
                                                      "the report then cannot say what the real runs alone kill)"),
        unit_tests: str = typer.Option(",".join(DEFAULT_UNIT_TESTS),
                                       help="comma list of test files/directories for the unit step"),
        unit_timeout: float = typer.Option(0.0, help="seconds before a mutant's unit run counts as killed "
                                           "(timeout); 0 = 3x the baseline's unit run, at least 60 s"),
        jobs: int = typer.Option(1, help="mutants evaluated at once (each in its own copy)"),
        time_budget: float = typer.Option(0.0, help="seconds; mutants not started by then are reported as not run "
                                          "(0 = no limit)"),
        rev: str = typer.Option("HEAD", help="git revision to measure (the project is copied from it, never "
                                "changed in place); the working tree's uncommitted edits are not included"),
        results_dir: str = typer.Option("results", help="the report goes to <results-dir>/mutation/<timestamp>/"),
    ) -> None:
        """Mutate Ukehi's code and count how many mutants the unit tests and the harness kill.

        Every mutant runs in a private copy of the project (from --rev), never in this tree.
        The harness budget is a fixed set of simulator seeds (--harness-sim) and a few short
        real runs (--harness-run). Prints a table (mutants, killed by unit tests, killed by the
        harness, by real runs, by the sim, survived) and the harness mutation score (mutants the
        harness kills / mutants the unit tests kill), and beside it the score without the
        mutants the triage registry (--triage) marks equivalent; every miss is listed with its
        triage category and reason, or "untriaged". The last line is a JSON object with the
        figures. Exit 0 when the run completed, 255 when
        the unmutated code fails its own checks (baseline) or the copy cannot be made.
        """
        from ..mutation import (OPERATORS, BaselineFailed, Config, HarnessRun, WorkspaceError, DEFAULT_HARNESS_RUNS,
                                run_mutation)
        from ..mutation.simbudget import SimBudget
        from ..mutation.session import list_with_triage
        from ..mutation.triage import load_registry

        root = _project_root()
        try:
            if unit_only and harness_only:
                raise ValueError("give --unit-only or --harness-only, not both")
            if jobs < 1:
                raise ValueError(f"--jobs {jobs}: give 1 or more")
            if sample < 0:
                raise ValueError(f"--sample {sample}: give 0 (all) or more")
            if harness_for not in ("all", "unit-killed"):
                raise ValueError(f"--harness-for {harness_for!r}: all or unit-killed")
            targets = [p.strip() for p in paths.split(",") if p.strip()]
            ops = list(OPERATORS) if operators.strip() == "all" else [o.strip() for o in operators.split(",") if o.strip()]
            if harness_run and [r.strip() for r in harness_run] == ["none"]:
                runs = []
            else:
                runs = [HarnessRun.parse(r) for r in harness_run] if harness_run else list(DEFAULT_HARNESS_RUNS)
            sim_budget = None if harness_sim.strip() == "none" else SimBudget.parse(harness_sim)
            if not unit_only and not runs and sim_budget is None:
                raise ValueError("--harness-run none and --harness-sim none leave the harness nothing to run: "
                                 "give --unit-only, or keep one of them")
            tests = [t.strip() for t in unit_tests.split(",") if t.strip()]
            registry = load_registry(triage or None)
            if check_triage:
                _, population, commit, matching = list_with_triage(root, targets, ops, sample=1, rev=rev,
                                                                   triage=registry)
                for entry, ids in matching.hits:
                    print(f"{(ids[0] if len(ids) == 1 else 'STALE' if not ids else 'AMBIGUOUS'):<48} "
                          f"{entry.category:<11} {entry.label}")
                for problem in matching.problems():
                    print(problem)
                print(f"{len(matching.hits)} triage entries about --paths, {len(matching.stale)} stale, "
                      f"{len(matching.ambiguous)} ambiguous ({registry.source or 'no registry'}; "
                      f"{population} mutants at {commit or root})")
                raise typer.Exit(EXIT_INVALID if matching.problems() else EXIT_VALID)
            if list_only:
                chosen, population, commit, matching = list_with_triage(root, targets, ops, seed=seed,
                                                                         sample=sample, ids=mutant or (),
                                                                         rev=rev, triage=registry)
                for m in chosen:
                    entry = matching.by_id.get(m.id)
                    print(f"{m.id}  {m.describe()}" + (f"  [triaged {entry.category}: {entry.reason}]"
                                                       if entry else ""))
                for problem in matching.problems():
                    print(problem)
                print(f"{len(chosen)} of {population} mutants at {commit or root}")
                raise typer.Exit(EXIT_VALID)
        except (ValueError, WorkspaceError) as err:
            raise BadArgument(str(err)) from None

        cfg = Config(unit=not harness_only, harness=not unit_only, unit_tests=tests, unit_timeout=unit_timeout,
                     harness_runs=runs, harness_for=harness_for, jobs=jobs, time_budget=time_budget,
                     sim=sim_budget, runs_after_sim_kill=not skip_runs_after_sim_kill)
        command = " ".join(["ukehi-jepsen", "mutate", "--paths", ",".join(targets)]
                           + ([] if mutant else ["--seed", str(seed), "--sample", str(sample)])
                           + (["--operators", ",".join(ops)] if operators.strip() != "all" else [])
                           + [f"--mutant {m}" for m in mutant or ()]
                           + (["--unit-only"] if unit_only else []) + (["--harness-only"] if harness_only else [])
                           + ([f"--harness-for {harness_for}"] if harness_for != "all" else [])
                           + ([f"--harness-run {r.label}" for r in runs] or ["--harness-run none"] if harness_run else [])
                           + ([f"--harness-sim {sim_budget.label if sim_budget else 'none'}"]
                              if harness_sim != DEFAULT_SIM_BUDGET.label else [])
                           + (["--skip-runs-after-sim-kill"] if skip_runs_after_sim_kill else [])
                           + ([f"--triage {triage}"] if triage else [])
                           + ([f"--unit-tests {unit_tests}"] if tests != list(DEFAULT_UNIT_TESTS) else [])
                           + ([f"--unit-timeout {unit_timeout:g}"] if unit_timeout else [])
                           + ["--jobs", str(jobs)] + ([f"--time-budget {time_budget:g}"] if time_budget else [])
                           + ([f"--rev {rev}"] if rev != "HEAD" else []))
        try:
            outcome = run_mutation(root=root, results_dir=results_dir, cfg=cfg, targets=targets, operators=ops,
                                   seed=seed, sample=sample, ids=mutant or (), rev=rev, command=command,
                                   say=lambda line: print(line, flush=True), triage=registry)
        except ValueError as err:
            raise BadArgument(str(err)) from None
        except (BaselineFailed, WorkspaceError) as err:
            print(f"mutate: {err}", file=sys.stderr)
            raise typer.Exit(EXIT_CRASHED) from None
        except KeyboardInterrupt:
            print("mutate interrupted; finished mutants are in progress.jsonl of the report directory", file=sys.stderr)
            raise typer.Exit(130) from None
        print(f"\nreport written to {outcome.report_dir}/mutation.md and mutation.json")
        print(json.dumps({"commit": outcome.commit, **outcome.figures, "report": str(outcome.report_dir)}))
        raise typer.Exit(EXIT_VALID)
